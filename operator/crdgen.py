"""Render the CRDs in crds/ from the pydantic models in `tuxio.operator.models`.

pydantic's JSON schema is close to what Kubernetes wants but not structural: it uses $ref,
`anyOf` with null for optional fields, titles and `const`. `structural()` rewrites it into a
structural OpenAPI v3 schema: references inlined, optional fields plain (just not required),
every node typed, Kubernetes extensions (`x-kubernetes-*`) kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel

from .host_models import SandboxHostSpec, SandboxHostStatus
from .models import GROUP, VERSION, SandboxSpec, SandboxStatus
from .pool_models import SandboxPoolSpec, SandboxPoolStatus

__all__ = ["KINDS", "CrdKind", "render_all", "render_crd", "structural"]

_KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "required",
    "properties",
    "items",
    "additionalProperties",
    "anyOf",
    "x-kubernetes-validations",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
}


def structural(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pydantic JSON schema node turned into a structural Kubernetes schema node."""
    defs = schema.get("$defs", {}) if defs is None else defs
    node = dict(schema)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[1]]
        node = {**target, **node}  # the field's own description and default win
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}
        return structural(node, defs)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) != 1:
            raise ValueError(f"cannot make a structural schema of anyOf {node['anyOf']}")
        if rest.get("default", ...) is None:
            rest.pop("default")  # null defaults are how pydantic says "optional"
        return structural({**options[0], **rest}, defs)
    if node.get("x-kubernetes-int-or-string"):
        node.pop("anyOf", None)  # the extension says it; structural schemas need no anyOf
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("default", ...) is None:
        node.pop("default")
    if "$ref" in node:
        return structural(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _KEEP:
            continue
        if key == "properties":
            out[key] = {name: structural(prop, defs) for name, prop in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = structural(value, defs)
        else:
            out[key] = value
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "type" not in out and not out.get("x-kubernetes-int-or-string"):
        raise ValueError(f"schema node without a type: {schema}")
    return out


def _object_schema(model: type[BaseModel]) -> dict[str, Any]:
    return structural(model.model_json_schema(mode="validation", by_alias=True))


@dataclass(frozen=True)
class CrdKind:
    """Everything about one kind that is not in its models."""

    kind: str
    plural: str
    singular: str
    short_names: list[str]
    scope: str
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    columns: list[dict[str, Any]]
    scale: dict[str, str] | None = None
    spec_required: bool = True
    extra_properties: dict[str, Any] = field(default_factory=dict)


_READY = '.status.conditions[?(@.type=="Ready")].status'

KINDS = [
    CrdKind(
        kind="Sandbox",
        plural="sandboxes",
        singular="sandbox",
        short_names=["sbx"],
        scope="Namespaced",
        spec=SandboxSpec,
        status=SandboxStatus,
        description="A disposable, boxed-in Linux machine: one unprivileged LXC container on "
        "a SandboxHost, pinned to its own cores with memory, pids and rlimit caps.",
        columns=[
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Host", "type": "string", "jsonPath": ".status.host"},
            {"name": "Template", "type": "string", "jsonPath": ".status.template"},
            {"name": "Ready", "type": "string", "jsonPath": _READY},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            # A string: kubectl renders a date column as an age, and a future one as <invalid>.
            {"name": "Expires", "type": "string", "jsonPath": ".status.expiresAt"},
            {"name": "Cores", "type": "string", "jsonPath": ".status.cpuset", "priority": 1},
            {"name": "Pool", "type": "string", "jsonPath": ".status.fromPool", "priority": 1},
        ],
    ),
    CrdKind(
        kind="SandboxPool",
        plural="sandboxpools",
        singular="sandboxpool",
        short_names=["sbxpool"],
        scope="Namespaced",
        spec=SandboxPoolSpec,
        status=SandboxPoolStatus,
        description="Keeps `replicas` warm containers of one template and set of limits "
        "running, so a Sandbox with a poolRef is ready in one agent round trip.",
        columns=[
            {"name": "Template", "type": "string", "jsonPath": ".spec.template"},
            {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Current", "type": "integer", "jsonPath": ".status.replicas"},
            {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        scale={
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    ),
    CrdKind(
        kind="SandboxHost",
        plural="sandboxhosts",
        singular="sandboxhost",
        short_names=["sbxhost"],
        scope="Cluster",
        spec=SandboxHostSpec,
        status=SandboxHostStatus,
        description="An LXC host running the tuxio node agent, which the operator probes and "
        "places sandboxes on.",
        columns=[
            {"name": "Endpoint", "type": "string", "jsonPath": ".spec.endpoint"},
            {"name": "Region", "type": "string", "jsonPath": ".spec.location.region"},
            {"name": "Ready", "type": "string", "jsonPath": _READY},
            {"name": "Sandboxes", "type": "integer", "jsonPath": ".status.allocation.sandboxes"},
            {"name": "Load", "type": "number", "jsonPath": ".status.load"},
            {"name": "Heartbeat", "type": "date", "jsonPath": ".status.heartbeat"},
            {"name": "Templates", "type": "string", "jsonPath": ".status.templates", "priority": 1},
        ],
    ),
]


def render_crd(kind: CrdKind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind, as a dict."""
    spec_schema = _object_schema(kind.spec)
    spec_schema["description"] = (kind.spec.__doc__ or "").strip()
    status_schema = _object_schema(kind.status)
    status_schema["description"] = (kind.status.__doc__ or "").strip()
    subresources: dict[str, Any] = {"status": {}}
    if kind.scale:
        subresources["scale"] = kind.scale
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "tuxio"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": kind.short_names,
                "categories": ["tuxio"],
            },
            "scope": kind.scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": kind.columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            "required": ["spec"] if kind.spec_required else [],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "API version."},
                                "kind": {"type": "string", "description": "Kind."},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_all() -> dict[str, str]:
    """File name -> YAML text for every CRD."""
    header = "# Generated by `make crds` from operator/models.py. Do not edit.\n"
    return {
        f"{kind.plural}.yaml": header + yaml.safe_dump(render_crd(kind), sort_keys=False, width=100)
        for kind in KINDS
    }
