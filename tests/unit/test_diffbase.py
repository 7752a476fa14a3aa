"""The lean diff base gives kopf exactly the essence its own builder gives."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from tuxio.operator.diffbase import LeanStatusDiffBase
from tuxio.operator.labels import ASSIGNMENT

BODY: dict[str, Any] = {
    "apiVersion": "tux.io/v1alpha1",
    "kind": "Sandbox",
    "metadata": {
        "name": "s",
        "namespace": "n",
        "uid": "u",
        "resourceVersion": "7",
        "generation": 2,
        "labels": {"team": "web"},
        "annotations": {
            ASSIGNMENT: '{"host": "h"}',
            "kopf.tux.io/sandbox_changed": "{}",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "note": "kept",
        },
        "finalizers": ["tux.io/container"],
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
    },
    "spec": {"poolRef": {"name": "warm"}, "resources": {"cpus": 1}},
    "status": {"phase": "Running", "lastHandledConfiguration": '{"spec": {}}'},
}


@pytest.mark.parametrize(
    "body",
    [
        BODY,
        {**BODY, "metadata": {"name": "bare"}},  # no labels, no annotations
        {k: v for k, v in BODY.items() if k != "status"},
    ],
)
def test_same_essence_as_kopfs(body: dict[str, Any]) -> None:
    ignored = [("metadata", "annotations", ASSIGNMENT)]
    field = "status.lastHandledConfiguration"
    stock = kopf.StatusDiffBaseStorage(field=field, ignored_fields=ignored)
    lean = LeanStatusDiffBase(field=field, ignored_fields=ignored)
    expected = stock.build(body=kopf.Body(body))
    assert lean.build(body=kopf.Body(body)) == expected
    assert "status" not in expected
