"""Claims at admission: a Sandbox with a poolRef adopts its warm container in the write that
creates it.

A mutating webhook, served by the operator, takes a warm container from the pool's inventory
and adds the assignment (host, container, the container's ETag) and the finalizer to the
Sandbox being created. The claim is then stored by the API server in the same write as the
Sandbox itself, before the agent hears of it, and the operator's next step is the agent's PUT:
one API write fewer on the path to Ready than a claim recorded by a patch after the create.

The webhook is an optimisation, never a dependency: `failurePolicy: Ignore` and a short
timeout, so a Sandbox created while the operator is down or slow is stored without a claim and
placed by the operator as usual. A claim whose Sandbox is never stored (a later admission step
or the storage refused it) is held for `admission_claim_seconds`, then the container is free
again; two claims of one container (possible only across two operator runs) are settled by the
agent's compare-and-set (If-Match), which gives it to one of them.
"""

from __future__ import annotations

import base64
import logging
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kopf
from kubernetes.client.exceptions import ApiException

from tuxio.nodeagent.tls import make_self_signed

from .kube import Kube, NotFound
from .models import GROUP, VERSION
from .settings import OperatorSettings

__all__ = [
    "CONFIGURATION",
    "HANDLER_ID",
    "WEBHOOK",
    "apply_webhook_configuration",
    "remove_webhook_configuration",
    "webhook_configuration",
    "webhook_hosts",
    "webhook_server",
]

log = logging.getLogger(__name__)

CONFIGURATION = "tuxio-sandbox-claims"  # the MutatingWebhookConfiguration
WEBHOOK = "claims.sandboxes.tux.io"
HANDLER_ID = "claim"  # kopf routes /<handler id> to the handler
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


def webhook_server(settings: OperatorSettings) -> tuple[kopf.WebhookServer, bytes]:
    """kopf's TLS webhook server with a fresh self-signed certificate for the webhook's names,
    and that certificate (the CA bundle the API server is given). kopf serves; it does not
    manage the webhook configuration (settings.admission.managed stays unset): we write it,
    with a short timeout, a match condition and failurePolicy Ignore, which kopf's own does
    not offer."""
    directory = (
        Path(settings.webhook_cert_dir)
        if settings.webhook_cert_dir
        else Path(tempfile.mkdtemp(prefix="tuxio-webhook-"))
    )
    cert, key = directory / "webhook.crt", directory / "webhook.key"
    make_self_signed(cert, key, webhook_hosts(settings))
    server = kopf.WebhookServer(
        addr=settings.webhook_listen,
        port=settings.webhook_port,
        certfile=str(cert),
        pkeyfile=str(key),
    )
    return server, cert.read_bytes()


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
    except ApiException as exc:
        if exc.status != 409:
            raise
        log.info("webhook %s was rewritten by another run: left in place", CONFIGURATION)
