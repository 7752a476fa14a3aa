"""The Kubernetes API calls the operator makes itself.

kopf watches; this module covers the writes the operator makes itself (a scheduling decision
recorded before the agent is told, the status of a Sandbox) and the reads kopf does not do
(Secrets, a Sandbox read back). The calls on every claim's path (a Sandbox's status, the
decision patch) go over aiohttp, as kopf's own do, with the official client's credentials:
that client is synchronous, each call a thread hand-off and milliseconds of CPU. The others
use the official client in a worker thread. kubernetes_asyncio, the maintained async client,
was measured against `AsyncApi` on the claim path and costs twice its CPU per status patch
(docs/benchmarks.md, bench/kube_client_bench.py), so the claim path keeps this one.

Every failure is one of this module's errors, carrying the server's status and message:
`NotFound` (404), `Conflict` (409), or `ApiError` for any other.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import kubernetes
from kubernetes.client.exceptions import ApiException

from .models import GROUP, VERSION

__all__ = ["ApiError", "AsyncApi", "Conflict", "Kube", "NotFound", "load_client"]

log = logging.getLogger(__name__)


class ApiError(Exception):
    """The API server refused a request: its HTTP status and its message."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class NotFound(ApiError, LookupError):
    """The object does not exist (any more)."""


class Conflict(ApiError):
    """A precondition failed (resourceVersion, uid): someone changed the object."""


def api_error(status: int, reason: str) -> ApiError:
    """The error for an answer with this status."""
    if status == 404:
        return NotFound(status, reason)
    if status == 409:
        return Conflict(status, reason)
    return ApiError(status, reason)


def load_client(pool_size: int = 32) -> kubernetes.client.ApiClient:
    """An API client from the in-cluster service account, or else the kubeconfig."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return kubernetes.client.ApiClient(configuration)


class AsyncApi:
    """Requests to the API server over aiohttp, authenticated as the official client's
    configuration says (its server, CA, client certificate, and bearer token: read for every
    request through the configuration, which refreshes a service account's token)."""

    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        self.configuration = configuration
        self.server = configuration.host.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._auth: str | None = None
        self._auth_at = float("-inf")

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.configuration.verify_ssl:
            return False
        context = ssl.create_default_context(cafile=self.configuration.ssl_ca_cert or None)
        if self.configuration.cert_file:
            context.load_cert_chain(self.configuration.cert_file, self.configuration.key_file)
        return context

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=64),
                timeout=aiohttp.ClientTimeout(total=60),
            )
        return self._session

    def _authorization(self) -> str | None:
        # Asked of the configuration at most every few seconds: its refresh hook (which re-reads
        # a service account's token when due) costs a tenth of a millisecond per call.
        now = time.monotonic()
        if now - self._auth_at < 5.0:
            return self._auth
        key = self.configuration.get_api_key_with_prefix(
            "BearerToken"
        ) or self.configuration.get_api_key_with_prefix("authorization")
        if not key and self.configuration.username:
            key = aiohttp.BasicAuth(
                self.configuration.username, self.configuration.password or ""
            ).encode()
        self._auth, self._auth_at = key or None, now
        return self._auth

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        authorization = self._authorization()
        if authorization:
            headers["Authorization"] = authorization
        return headers

    async def patch(self, path: str, body: Any, content_type: str) -> dict[str, Any]:
        """PATCH `path`; a refusal is an ApiError (NotFound, Conflict) with the server's
        answer. A 401 is tried once more with credentials read afresh (a service account's
        token rotates)."""
        try:
            return await self._patch(path, body, content_type)
        except ApiError as exc:
            if exc.status != 401:
                raise
        self._auth_at = float("-inf")
        return await self._patch(path, body, content_type)

    async def _patch(self, path: str, body: Any, content_type: str) -> dict[str, Any]:
        async with self._http().patch(
            self.server + path,
            data=json.dumps(body).encode(),
            headers=self._headers(content_type),
            # A kubeconfig's tls-server-name: the name the server's certificate is checked for.
            server_hostname=getattr(self.configuration, "tls_server_name", None) or None,
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise api_error(response.status, f"{response.reason}: {text}")
            answer: dict[str, Any] = json.loads(text)
            return answer

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _sandbox_path(namespace: str, name: str, subresource: str = "") -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/sandboxes/{name}"
    return f"{path}/{subresource}" if subresource else path


class Kube:
    """Thin async wrappers; every refusal is an ApiError."""

    def __init__(self, client: kubernetes.client.ApiClient, workers: int = 32) -> None:
        self.http = AsyncApi(client.configuration)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.core = kubernetes.client.CoreV1Api(client)
        self.admission = kubernetes.client.AdmissionregistrationV1Api(client)
        self.certificates = kubernetes.client.CertificatesV1Api(client)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except ApiException as exc:
            raise api_error(int(exc.status or 0), str(exc.reason)) from None

    async def _object(
        self, fn: Any, namespace: str, plural: str, name: str, *args: Any, **kwargs: Any
    ) -> Any:
        """A call on one of our namespaced objects (group tux.io, this version)."""
        return await self._call(fn, GROUP, VERSION, namespace, plural, name, *args, **kwargs)

    async def patch_sandbox_status(self, namespace: str, name: str, status: dict[str, Any]) -> Any:
        """Merge `status` into the Sandbox's status subresource."""
        return await self.http.patch(
            _sandbox_path(namespace, name, "status"),
            {"status": status},
            "application/merge-patch+json",
        )

    async def hold_sandbox(
        self,
        namespace: str,
        name: str,
        meta: dict[str, Any],
        finalizer: str,
        annotations: dict[str, str] | None = None,
    ) -> None:
        """One write to the Sandbox `meta["uid"]`: `finalizer` unless it is there, and
        `annotations`. A JSON patch that tests the uid first (never a namesake made since),
        then sets the finalizer list it was given plus ours: the same whole-list write kopf
        makes for its own finalizers. The API server refuses new finalizers on an object
        being deleted, which surfaces as an ApiError (422)."""
        ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": meta["uid"]}]
        if annotations and meta.get("annotations"):
            for key, value in annotations.items():
                escaped = key.replace("~", "~0").replace("/", "~1")
                ops.append(
                    {"op": "add", "path": f"/metadata/annotations/{escaped}", "value": value}
                )
        elif annotations:
            ops.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
        present = list(meta.get("finalizers") or [])
        if finalizer not in present:
            ops.append(
                {"op": "add", "path": "/metadata/finalizers", "value": [*present, finalizer]}
            )
        await self.http.patch(_sandbox_path(namespace, name), ops, "application/json-patch+json")

    async def remove_sandbox_finalizer(
        self, namespace: str, name: str, uid: str, finalizer: str, attempts: int = 10
    ) -> None:
        """Drop `finalizer` from the Sandbox `uid`: read, then write the list without it on the
        resourceVersion read (a conflict means someone changed the list: read again)."""
        for _ in range(attempts):
            try:
                meta = (await self.get_sandbox(namespace, name))["metadata"]
            except NotFound:
                return
            present = list(meta.get("finalizers") or [])
            if meta["uid"] != uid or finalizer not in present:
                return
            try:
                await self._object(
                    self.custom.patch_namespaced_custom_object,
                    namespace,
                    "sandboxes",
                    name,
                    {
                        "metadata": {
                            "resourceVersion": meta["resourceVersion"],
                            "finalizers": [f for f in present if f != finalizer],
                        }
                    },
                )
                return
            except NotFound:
                return
            except Conflict:
                continue
        raise Conflict(409, f"{namespace}/{name}: finalizers kept changing; {finalizer} stays")

    async def get_sandbox(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = await self._object(
            self.custom.get_namespaced_custom_object, namespace, "sandboxes", name
        )
        return found

    async def delete_sandbox(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Delete a Sandbox; with `uid`, only that very object (not a namesake made since)."""
        options = kubernetes.client.V1DeleteOptions(
            preconditions=kubernetes.client.V1Preconditions(uid=uid) if uid else None
        )
        await self._object(
            self.custom.delete_namespaced_custom_object,
            namespace,
            "sandboxes",
            name,
            body=options,
        )

    async def close(self) -> None:
        await self.http.close()
        self._pool.shutdown(wait=False)

    async def patch_pool_status(self, namespace: str, name: str, status: dict[str, Any]) -> Any:
        return await self._object(
            self.custom.patch_namespaced_custom_object_status,
            namespace,
            "sandboxpools",
            name,
            {"status": status},
        )

    async def scale_pool(self, namespace: str, name: str, replicas: int) -> Any:
        """Set a pool's replicas through its scale subresource, as an HPA would."""
        return await self._object(
            self.custom.patch_namespaced_custom_object_scale,
            namespace,
            "sandboxpools",
            name,
            {"spec": {"replicas": replicas}},
        )

    async def apply_mutating_webhook_configuration(
        self, configuration: dict[str, Any], field_manager: str
    ) -> str:
        """Server-side apply of a MutatingWebhookConfiguration (created if missing); returns
        the resourceVersion written."""
        applied = await self._call(
            self.admission.patch_mutating_webhook_configuration,
            configuration["metadata"]["name"],
            configuration,
            field_manager=field_manager,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        return str(applied.metadata.resource_version)

    async def delete_mutating_webhook_configuration(self, name: str, resource_version: str) -> None:
        """Delete it, but only as written at `resource_version` (409 if changed since)."""
        options = kubernetes.client.V1DeleteOptions(
            preconditions=kubernetes.client.V1Preconditions(resource_version=resource_version)
        )
        await self._call(self.admission.delete_mutating_webhook_configuration, name, body=options)

    async def apply_host(self, host: dict[str, Any], field_manager: str) -> None:
        """Server-side apply of a SandboxHost (created if missing): only its fields in `host`
        become `field_manager`'s; the rest stays whoever's it is."""
        await self._call(
            self.custom.patch_cluster_custom_object,
            GROUP,
            VERSION,
            "sandboxhosts",
            host["metadata"]["name"],
            host,
            field_manager=field_manager,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    async def delete_host(self, name: str) -> None:
        """Delete a SandboxHost; one that is gone already is no error."""
        try:
            await self._call(
                self.custom.delete_cluster_custom_object, GROUP, VERSION, "sandboxhosts", name
            )
        except NotFound:
            return

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """The Secret's data, decoded."""
        secret = await self._call(self.core.read_namespaced_secret, name, namespace)
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    async def read_secret_object(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret as the API server has it (data still base64), None if there is none."""
        try:
            answer = await self._call(
                self.core.read_namespaced_secret, name, namespace, _preload_content=False
            )
        except NotFound:
            return None
        return dict(json.loads(answer.data))

    async def write_secret(self, secret: dict[str, Any], resource_version: str | None) -> None:
        """Create the Secret (no `resource_version`) or replace it as read at that version
        (409 if it changed since)."""
        meta = secret["metadata"]
        if resource_version is None:
            await self._call(self.core.create_namespaced_secret, meta["namespace"], secret)
            return
        body = {**secret, "metadata": {**meta, "resourceVersion": resource_version}}
        await self._call(self.core.replace_namespaced_secret, meta["name"], meta["namespace"], body)

    async def _csr(self, fn: Any, *args: Any) -> dict[str, Any]:
        answer = await self._call(fn, *args, _preload_content=False)
        return dict(json.loads(answer.data))

    async def read_csr(self, name: str) -> dict[str, Any]:
        return await self._csr(self.certificates.read_certificate_signing_request, name)

    async def decide_csr(
        self, csr: dict[str, Any], approved: bool, reason: str, message: str
    ) -> dict[str, Any]:
        """Approve or deny a CertificateSigningRequest (as read: 409 if it changed)."""
        condition = {
            "type": "Approved" if approved else "Denied",
            "status": "True",
            "reason": reason,
            "message": message,
        }
        status = dict(csr.get("status") or {})
        status["conditions"] = [*(status.get("conditions") or []), condition]
        return await self._csr(
            self.certificates.replace_certificate_signing_request_approval,
            csr["metadata"]["name"],
            {**csr, "status": status},
        )

    async def annotate_csr(self, name: str, annotations: dict[str, str]) -> dict[str, Any]:
        return await self._csr(
            self.certificates.patch_certificate_signing_request,
            name,
            {"metadata": {"annotations": annotations}},
        )

    async def issue_csr(self, csr: dict[str, Any], certificate_pem: str) -> None:
        """Write the signed certificate into the request's status (as read)."""
        status = {
            **(csr.get("status") or {}),
            "certificate": base64.b64encode(certificate_pem.encode()).decode(),
        }
        await self._csr(
            self.certificates.replace_certificate_signing_request_status,
            csr["metadata"]["name"],
            {**csr, "status": status},
        )
