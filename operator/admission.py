"""Claims at admission: a Sandbox with a poolRef adopts its warm container in the write that
creates it.

A mutating webhook, served by the operator, takes a warm container from the pool's inventory
and adds the assignment (host, container, the container's ETag) and the finalizer to the
Sandbox being created. The claim is then stored by the API server in the same write as the
Sandbox itself, before the agent hears of it, and the operator's next step is the agent's PUT:
one API write fewer on the path to Ready than a claim recorded by a patch after the create.

It is a small aiohttp endpoint of its own rather than kopf's admission machinery: kopf
deep-copies and diffs the whole object to compute a JSON patch and recalls a memo per request,
about as much CPU as the claim itself, on the path of every warm claim. The AdmissionReview
protocol (admission.k8s.io/v1) is small: a request with the object, an answer with a JSON patch.

Only the API server may call it: with `webhook_client_ca` set, the TLS handshake requires a
client certificate from that CA (the API server presents one when its admission configuration
names it, see docs/hardening.md), and `webhook_client_names` narrows it to the names given;
a caller without one is refused before a byte of HTTP, one with another name gets 403. The
NetworkPolicy of manifests/base/operator admits the webhook's port from outside the pod
network only, where the API server is.

The webhook is an optimisation, never a dependency: `failurePolicy: Ignore` and a short
timeout, so a Sandbox created while the operator is down or slow is stored without a claim and
placed by the operator as usual. A claim whose Sandbox is never stored (a later admission step
or the storage refused it) is held for `admission_claim_seconds`, then the container is free
again; two claims of one container (possible only across two operator runs) are settled by the
agent's compare-and-set (If-Match), which gives it to one of them.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from tuxio.nodeagent.tls import make_self_signed

from .kube import Conflict, Kube, NotFound
from .labels import ASSIGNMENT, FINALIZER
from .models import GROUP, VERSION
from .settings import OperatorSettings

__all__ = [
    "CONFIGURATION",
    "HANDLER_ID",
    "WEBHOOK",
    "ClaimWebhook",
    "apply_webhook_configuration",
    "certificate_names",
    "claim_patch",
    "remove_webhook_configuration",
    "review_answer",
    "webhook_configuration",
    "webhook_hosts",
]

log = logging.getLogger(__name__)

CONFIGURATION = "tuxio-sandbox-claims"  # the MutatingWebhookConfiguration
WEBHOOK = "claims.sandboxes.tux.io"
HANDLER_ID = "claim"  # the webhook's path
FIELD_MANAGER = "tuxio-operator"


def webhook_hosts(settings: OperatorSettings) -> list[str]:
    """The names the API server reaches the webhook by: its certificate's SANs."""
    if settings.webhook_url:
        host = urlsplit(settings.webhook_url).hostname
        if not host:
            raise ValueError(f"webhook_url {settings.webhook_url!r} names no host")
        return [host]
    service, namespace = settings.webhook_service, settings.webhook_service_namespace
    return [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def webhook_configuration(settings: OperatorSettings, ca_pem: bytes) -> dict[str, Any]:
    """The MutatingWebhookConfiguration of the claim webhook. Pure."""
    client: dict[str, Any] = {"caBundle": base64.b64encode(ca_pem).decode()}
    if settings.webhook_url:
        client["url"] = f"{settings.webhook_url.rstrip('/')}/{HANDLER_ID}"
    else:
        client["service"] = {
            "name": settings.webhook_service,
            "namespace": settings.webhook_service_namespace,
            "port": settings.webhook_service_port,
            "path": f"/{HANDLER_ID}",
        }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": CONFIGURATION,
            "labels": {
                "app.kubernetes.io/name": "tuxio-operator",
                "app.kubernetes.io/part-of": "tuxio",
            },
        },
        "webhooks": [
            {
                "name": WEBHOOK,
                "clientConfig": client,
                "rules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": [VERSION],
                        "resources": ["sandboxes"],
                        "operations": ["CREATE"],
                        "scope": "Namespaced",
                    }
                ],
                # Only Sandboxes that name a pool: the others never reach the operator here.
                "matchConditions": [
                    {"name": "claims-from-a-pool", "expression": "has(object.spec.poolRef)"}
                ],
                # An optimisation, not a gate: when the operator does not answer in time, the
                # Sandbox is stored without a claim and placed by the operator afterwards.
                "failurePolicy": "Ignore",
                "timeoutSeconds": settings.webhook_timeout_seconds,
                # It takes a container out of the pool, so not on a dry run (it is told).
                "sideEffects": "NoneOnDryRun",
                "reinvocationPolicy": "Never",
                "matchPolicy": "Equivalent",
                "admissionReviewVersions": ["v1"],
            }
        ],
    }


def certificate_names(peer: Mapping[str, Any]) -> set[str]:
    """The common names and DNS SANs of a certificate as ssl's getpeercert() gives it. Pure."""
    names = {value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"}
    names |= {value for kind, value in peer.get("subjectAltName", ()) if kind == "DNS"}
    return names


# What the webhook is given to decide with: the Sandbox being created; what it answers with:
# the assignment to store with it (None: no claim, the Sandbox is stored as it is).
Claimer = Callable[[Mapping[str, Any]], dict[str, Any] | None]


def claim_patch(obj: Mapping[str, Any], decided: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch that stores `decided` as the assignment annotation of `obj`, with our
    finalizer. Pure."""
    meta = obj.get("metadata") or {}
    ops: list[dict[str, Any]] = []
    value = json.dumps(decided, sort_keys=True)
    if meta.get("annotations"):
        key = ASSIGNMENT.replace("~", "~0").replace("/", "~1")
        ops.append({"op": "add", "path": f"/metadata/annotations/{key}", "value": value})
    else:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {ASSIGNMENT: value}})
    finalizers = list(meta.get("finalizers") or [])
    if FINALIZER not in finalizers:
        ops.append({"op": "add", "path": "/metadata/finalizers", "value": [*finalizers, FINALIZER]})
    return ops


def review_answer(review: Mapping[str, Any], claimer: Claimer) -> dict[str, Any]:
    """The AdmissionReview answering `review`: allowed always (the webhook never refuses a
    Sandbox), with the claim's patch when it is a real creation of a Sandbox that gets one."""
    request = review.get("request")
    if not isinstance(request, Mapping) or "uid" not in request:
        raise ValueError("not an AdmissionReview request")
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    obj = request.get("object")
    if (
        request.get("operation") == "CREATE"
        and (request.get("resource") or {}).get("resource") == "sandboxes"
        and not request.get("subResource")
        and not request.get("dryRun")  # a dry run must not take a container
        and isinstance(obj, Mapping)
    ):
        decided = claimer(obj)
        if decided is not None:
            ops = claim_patch(obj, decided)
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    return {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": response,
    }


class ClaimWebhook:
    """The HTTPS endpoint the API server calls, with a fresh self-signed certificate for the
    webhook's names (its CA bundle goes to the webhook configuration)."""

    def __init__(self, settings: OperatorSettings, claimer: Claimer) -> None:
        self.settings = settings
        self.claimer = claimer
        directory = (
            Path(settings.webhook_cert_dir)
            if settings.webhook_cert_dir
            else Path(tempfile.mkdtemp(prefix="tuxio-webhook-"))
        )
        self.cert, self.key = directory / "webhook.crt", directory / "webhook.key"
        make_self_signed(self.cert, self.key, webhook_hosts(settings))
        self.ca_pem = self.cert.read_bytes()
        self._runner: web.AppRunner | None = None

    def _caller_refused(self, request: web.Request) -> str | None:
        """Why a caller whose certificate the handshake accepted is refused (a name that is
        not allowed), or None."""
        names = self.settings.webhook_client_names
        if self.settings.webhook_client_ca is None or not names:
            return None
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        presented = certificate_names(peer or {})
        if not presented & set(names):
            return f"client certificate names {sorted(presented)}, none of {sorted(names)}"
        return None

    async def _serve(self, request: web.Request) -> web.Response:
        refused = self._caller_refused(request)
        if refused is not None:
            log.warning("claim webhook: refused a caller: %s", refused)
            return web.json_response({"message": f"forbidden: {refused}"}, status=403)
        try:
            review = json.loads(await request.read())
            answer = review_answer(review, self.claimer)
        except ValueError as exc:
            return web.json_response({"message": f"bad AdmissionReview: {exc}"}, status=400)
        return web.json_response(answer)

    async def start(self) -> None:
        app = web.Application(client_max_size=4 * 2**20)
        app.router.add_post(f"/{HANDLER_ID}", self._serve)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        if self.settings.webhook_client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=self.settings.webhook_client_ca)
        else:
            log.warning(
                "claim webhook: no webhook_client_ca, so any caller that reaches the port is "
                "answered; the NetworkPolicy of manifests/base/operator must keep others away"
            )
        site = web.TCPSite(
            self._runner,
            self.settings.webhook_listen,
            self.settings.webhook_port,
            ssl_context=context,
        )
        await site.start()
        log.info(
            "claim webhook listening on https://%s:%d/%s",
            self.settings.webhook_listen,
            self.settings.webhook_port,
            HANDLER_ID,
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def apply_webhook_configuration(kube: Kube, configuration: dict[str, Any]) -> str:
    """Create or update the configuration (server-side apply: ours are the only fields);
    returns its resourceVersion, for remove_webhook_configuration."""
    version = await kube.apply_mutating_webhook_configuration(configuration, FIELD_MANAGER)
    log.info(
        "webhook %s: claims at admission via %s",
        CONFIGURATION,
        configuration["webhooks"][0]["clientConfig"].get("url")
        or configuration["webhooks"][0]["clientConfig"]["service"],
    )
    return version


async def remove_webhook_configuration(kube: Kube, resource_version: str) -> None:
    """On a clean stop: remove the configuration, unless another operator run has rewritten
    it since (a conflict then: it is theirs). Sandboxes created meanwhile are placed by the
    operator's own claims when it runs again."""
    try:
        await kube.delete_mutating_webhook_configuration(CONFIGURATION, resource_version)
    except NotFound:
        return
    except Conflict:
        log.info("webhook %s was rewritten by another run: left in place", CONFIGURATION)
