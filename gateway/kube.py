"""The gateway's Kubernetes API calls, over kubernetes_asyncio (aiohttp).

kubernetes_asyncio is the maintained asyncio port of the official client: its configuration
loads a kubeconfig or the in-cluster ServiceAccount (re-reading a rotated token) and its REST
layer makes every request. This module asks it for plain JSON (`_preload_content=False`) and
keeps only what the gateway needs: get, list and watch, a SubjectAccessReview, and one Secret
write (its own signing key). `Reflector` lists and then watches a collection, as client-go's
reflector does, feeding a store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from .frontproxy import UserInfo

__all__ = [
    "Kube",
    "KubeError",
    "KubeNotFound",
    "Reflector",
    "Store",
    "load_api_client",
]

log = logging.getLogger(__name__)

WATCH_SECONDS = 290  # the API server ends a watch after at most this long; we start another


class KubeError(Exception):
    """The API server answered with an error; `status` and its `body` (a Status) tell which."""

    def __init__(self, status: int, body: Mapping[str, Any], path: str) -> None:
        message = body.get("message") if isinstance(body, Mapping) else None
        super().__init__(f"{path}: {status} {message or body}")
        self.status = status
        self.body = body


class KubeNotFound(KubeError):
    """404."""


async def load_api_client() -> k8s.ApiClient:
    """An API client from the in-cluster ServiceAccount, or else the kubeconfig ($KUBECONFIG)."""
    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException:
        await k8s_config.load_kube_config(client_configuration=configuration)
    return k8s.ApiClient(configuration)


class Kube:
    """JSON requests to the API server with the client's credentials."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api

    async def close(self) -> None:
        await self.api.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | aiohttp.ClientTimeout | None = 30.0,
    ) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await self.api.call_api(
            path,
            method,
            query_params=list(query),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
        if response.status >= 400:
            text = await response.text()
            response.release()
            try:
                answer = json.loads(text)
            except ValueError:
                answer = {"message": text[:500]}
            error = KubeNotFound if response.status == 404 else KubeError
            raise error(response.status, answer, path)
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        response = await self._send(method, path, query=query, body=body, content_type=content_type)
        async with response:
            answer: dict[str, Any] = await response.json(content_type=None)
        return answer

    async def get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
        return await self.request("GET", path, query=query)

    async def watch(
        self, path: str, query: Sequence[tuple[str, str]], resource_version: str
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch from `resource_version` (with bookmarks), until the API
        server ends it; an ERROR event (410 Gone: too old) raises KubeError."""
        params = [
            *query,
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(WATCH_SECONDS)),
        ]
        timeout = aiohttp.ClientTimeout(total=WATCH_SECONDS + 30, sock_read=WATCH_SECONDS + 30)
        response = await self._send("GET", path, query=params, timeout=timeout)
        async with response:
            pending = b""
            async for chunk in response.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event: dict[str, Any] = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise KubeError(int(status.get("code") or 500), status, path)
                    yield event

    async def subject_access_review(
        self, user: UserInfo, attributes: Mapping[str, str]
    ) -> tuple[bool, str]:
        """Whether `user` may do what `attributes` (resourceAttributes) say, and why not."""
        spec: dict[str, Any] = {
            "user": user.name,
            "groups": list(user.groups),
            "resourceAttributes": dict(attributes),
        }
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {key: list(values) for key, values in user.extra.items()}
        review = await self.request(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            body={
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": spec,
            },
        )
        status = review.get("status") or {}
        return bool(status.get("allowed")), str(status.get("reason") or "")


class Store(Protocol):
    """What a reflector feeds: the whole list, then each change."""

    def replace(self, items: list[dict[str, Any]]) -> None: ...

    def apply(self, kind: str, item: dict[str, Any]) -> None: ...


class Reflector:
    """List a collection, then watch it from the list's resourceVersion; again from a new list
    when the watch is too old (410) or fails (after a backoff). `synced` is set after the first
    list, and stays set: a store is stale on error, never empty."""

    def __init__(
        self,
        kube: Kube,
        path: str,
        store: Store,
        query: Sequence[tuple[str, str]] = (),
        *,
        name: str | None = None,
        backoff: Callable[[int], float] = lambda n: min(30.0, 0.5 * 2**n),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.kube = kube
        self.path = path
        self.store = store
        self.query = list(query)
        self.name = name or path
        self.synced = asyncio.Event()
        self._backoff = backoff
        self._sleep = sleep

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                version = await self._list()
                failures = 0
                while True:
                    version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                if exc.status == 410:
                    log.info("%s: watch too old, listing again", self.name)
                    continue
                log.warning("%s: %s", self.name, exc)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("%s: %s: %s", self.name, type(exc).__name__, exc)
            await self._sleep(self._backoff(failures))
            failures += 1

    async def _list(self) -> str:
        listing = await self.kube.get(self.path, self.query)
        self.store.replace(list(listing.get("items") or []))
        self.synced.set()
        return str(listing["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> str:
        async for event in self.kube.watch(self.path, self.query, version):
            item = event.get("object") or {}
            version = str((item.get("metadata") or {}).get("resourceVersion") or version)
            if event.get("type") != "BOOKMARK":
                self.store.apply(str(event.get("type")), item)
        return version


@contextlib.asynccontextmanager
async def running(*reflectors: Reflector) -> AsyncIterator[None]:
    """Run `reflectors` in the background for the duration of the block."""
    tasks = [asyncio.create_task(r.run(), name=f"reflector {r.name}") for r in reflectors]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
