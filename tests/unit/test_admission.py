"""Claims at admission without I/O: the webhook configuration, the claim, its hold."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from tuxio.nodeagent.api import MalformedHeader, parse_if_match
from tuxio.nodeagent.service import ANY
from tuxio.operator.admission import (
    CONFIGURATION,
    claim_patch,
    review_answer,
    webhook_configuration,
    webhook_hosts,
)
from tuxio.operator.models import SandboxHostSpec, SandboxPoolSpec
from tuxio.operator.pools import PoolState, Warm
from tuxio.operator.runtime import (
    ASSIGNMENT,
    AgentRegistry,
    Claims,
    EventBudget,
    HostRecord,
    PoolInfo,
    Runtime,
)
from tuxio.operator.sandboxes import ADOPT_IF_MATCH, admit_claim
from tuxio.operator.scheduling import HostView
from tuxio.operator.settings import OperatorSettings

GiB = 2**30


def settings(**values: Any) -> OperatorSettings:
    return OperatorSettings.model_validate(values)


def test_configuration_by_url() -> None:
    ours = settings(webhook_url="https://127.0.0.1:9443", webhook_timeout_seconds=3)
    config = webhook_configuration(ours, b"PEM")
    assert config["metadata"]["name"] == CONFIGURATION
    (hook,) = config["webhooks"]
    assert hook["clientConfig"] == {
        "url": "https://127.0.0.1:9443/claim",
        "caBundle": base64.b64encode(b"PEM").decode(),
    }
    assert hook["failurePolicy"] == "Ignore"  # creations never depend on the operator
    assert hook["timeoutSeconds"] == 3
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["matchConditions"] == [
        {"name": "claims-from-a-pool", "expression": "has(object.spec.poolRef)"}
    ]
    assert hook["rules"] == [
        {
            "apiGroups": ["tux.io"],
            "apiVersions": ["v1alpha1"],
            "resources": ["sandboxes"],
            "operations": ["CREATE"],
            "scope": "Namespaced",
        }
    ]
    assert webhook_hosts(ours) == ["127.0.0.1"]


def test_configuration_by_service() -> None:
    ours = settings(webhook_service="hook", webhook_service_namespace="ops")
    (hook,) = webhook_configuration(ours, b"PEM")["webhooks"]
    assert hook["clientConfig"]["service"] == {
        "name": "hook",
        "namespace": "ops",
        "port": 443,
        "path": "/claim",
    }
    assert "url" not in hook["clientConfig"]
    assert webhook_hosts(ours) == ["hook.ops.svc", "hook.ops.svc.cluster.local"]
    assert ours.claims_at_admission
    assert not settings().claims_at_admission


@pytest.mark.parametrize(
    ("header", "tags"),
    [
        ("*", {ANY}),
        ('"abc"', {"abc"}),
        ('"abc", "def"', {"abc", "def"}),
        ('W/"weak", "strong"', {"strong"}),  # weak tags never match If-Match
        ('W/"weak"', set()),
    ],
)
def test_parse_if_match(header: str, tags: set[str]) -> None:
    assert parse_if_match(header) == tags


@pytest.mark.parametrize("header", ["abc", '"a"b"', '"', '*, "a"'])
def test_parse_if_match_refuses(header: str) -> None:
    with pytest.raises(MalformedHeader):
        parse_if_match(header)


def test_claims_hold_for_their_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    claims = Claims(ttl=600)
    claims.add("long")
    claims.add("short", ttl=5)
    assert "long" in claims
    assert "short" in claims
    later = time.monotonic() + 10
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert "short" not in claims  # the Sandbox was never stored: the container is free again
    assert "long" in claims


def host(name: str, region: str | None = None) -> HostRecord:
    spec = SandboxHostSpec.model_validate(
        {
            "endpoint": f"http://{name}:7443",
            "credentialsSecretRef": {"name": "s", "namespace": "n"},
        }
    )
    view = HostView(
        name=name,
        ready=True,
        unschedulable=False,
        templates=frozenset({"busybox"}),
        shared_cpus=2,
        memory_bytes=8 * GiB,
        region=region,
    )
    return HostRecord(name, spec, view, None, None)


def runtime(**values: Any) -> Runtime:
    ours = settings(**values)
    return Runtime(settings=ours, kube=None, agents=AgentRegistry(None, 1.0))  # type: ignore[arg-type]


def loaded_pool(rt: Runtime, *warm: Warm) -> PoolInfo:
    info = PoolInfo(
        "pool-uid",
        "ns",
        "warm",
        SandboxPoolSpec.model_validate({"template": "busybox", "replicas": 2}),
    )
    state = PoolState(info.uid, info.namespace, info.name)
    state.warm = {w.name: w for w in warm}
    state.loaded.set()
    rt.pools[info.uid] = state
    return info


def new_sandbox(pool: str = "warm", **spec: Any) -> dict[str, Any]:
    """A Sandbox as a mutating webhook sees it: no uid, no creationTimestamp yet."""
    return {
        "apiVersion": "tux.io/v1alpha1",
        "kind": "Sandbox",
        "metadata": {"name": "visitor", "namespace": "ns"},
        "spec": {"poolRef": {"name": pool}, **spec},
    }


def test_admit_claim_takes_a_warm_container_once() -> None:
    rt = runtime(admission_claim_seconds=30)
    pool = loaded_pool(rt, Warm("w1", "h1", "busybox", "ph", True, 64 * 2**20, 1, etag="e1"))
    hosts = {"h1": host("h1")}
    pools = {("ns", "warm"): pool}
    decided = admit_claim(rt, new_sandbox(), hosts, pools)
    assert decided is not None
    assert decided["host"] == "h1"
    assert decided["containerName"] == "w1"
    assert decided["fromPool"] == "warm"
    assert decided[ADOPT_IF_MATCH] == "e1"  # the first PUT adopts it only if still warm
    scheduled = next(c for c in decided["conditions"] if c["type"] == "Scheduled")
    assert scheduled["reason"] == "ClaimedFromPool"
    json.dumps(decided)  # stored as an annotation
    assert "w1" in rt.claims
    assert rt.pools[pool.uid].warm == {}
    # The pool is empty now: the next Sandbox is left to the operator (a cold create).
    assert admit_claim(rt, new_sandbox(), hosts, pools) is None


@pytest.mark.parametrize(
    "body",
    [
        {"metadata": {"namespace": "ns"}, "spec": {"template": "busybox"}},  # no poolRef
        new_sandbox(pool="other"),  # no such pool
        new_sandbox(resources={"cpus": 0}),  # invalid: the API server refuses it next
    ],
)
def test_admit_claim_leaves_others_alone(body: dict[str, Any]) -> None:
    rt = runtime()
    pool = loaded_pool(rt, Warm("w1", "h1", "busybox", "ph", True, 64 * 2**20, 1, etag="e1"))
    assert admit_claim(rt, body, {"h1": host("h1")}, {("ns", "warm"): pool}) is None
    assert "w1" in rt.pools[pool.uid].warm
    assert "w1" not in rt.claims


def test_admit_claim_waits_for_no_inventory() -> None:
    rt = runtime()
    pool = loaded_pool(rt, Warm("w1", "h1", "busybox", "ph", True, 64 * 2**20, 1, etag="e1"))
    rt.pools[pool.uid].loaded.clear()  # just started: the inventory is being read
    assert admit_claim(rt, new_sandbox(), {"h1": host("h1")}, {("ns", "warm"): pool}) is None


def test_event_budget_holds_routine_events_to_its_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    budget = EventBudget(per_second=10, burst=3)
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    clock[0] += 0.25  # 2.5 tokens later
    assert [budget.take() for _ in range(3)] == [True, True, False]
    clock[0] += 60  # never more than the burst
    assert sum(budget.take() for _ in range(10)) == 3


def review(obj: dict[str, Any], **request: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "r-1",
            "operation": "CREATE",
            "resource": {"group": "tux.io", "version": "v1alpha1", "resource": "sandboxes"},
            "object": obj,
            **request,
        },
    }


def test_review_answer_patches_in_the_claim() -> None:
    decided = {"host": "h1", "containerName": "w1"}
    answer = review_answer(review(new_sandbox()), lambda obj: decided)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert (response["uid"], response["allowed"], response["patchType"]) == (
        "r-1",
        True,
        "JSONPatch",
    )
    ops = json.loads(base64.b64decode(response["patch"]))
    assert ops == [
        {
            "op": "add",
            "path": "/metadata/annotations",
            "value": {ASSIGNMENT: json.dumps(decided, sort_keys=True)},
        },
        {"op": "add", "path": "/metadata/finalizers", "value": ["tux.io/container"]},
    ]


def test_claim_patch_keeps_what_is_there() -> None:
    obj = {"metadata": {"annotations": {"note": "x"}, "finalizers": ["theirs"]}}
    assert claim_patch(obj, {"host": "h"}) == [
        {
            "op": "add",
            "path": "/metadata/annotations/tux.io~1assignment",
            "value": '{"host": "h"}',
        },
        {"op": "add", "path": "/metadata/finalizers", "value": ["theirs", "tux.io/container"]},
    ]


@pytest.mark.parametrize(
    "request_",
    [
        {"dryRun": True},  # a dry run takes nothing
        {"operation": "UPDATE"},
        {"subResource": "status"},
        {"resource": {"group": "tux.io", "version": "v1alpha1", "resource": "sandboxpools"}},
    ],
)
def test_review_answer_allows_without_claiming(request_: dict[str, Any]) -> None:
    asked: list[Any] = []
    answer = review_answer(
        review(new_sandbox(), **request_), lambda obj: asked.append(obj) or {"host": "h"}
    )
    assert answer["response"] == {"uid": "r-1", "allowed": True}
    assert asked == []


def test_review_answer_refuses_what_is_no_review() -> None:
    with pytest.raises(ValueError, match="AdmissionReview"):
        review_answer({"kind": "Nonsense"}, lambda obj: None)
