"""Claims at admission without I/O: the webhook configuration, the claim, its hold."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tuxio.common.timeutil import FixedClock
from tuxio.nodeagent.api import MalformedHeader, parse_if_match
from tuxio.nodeagent.service import ANY
from tuxio.operator.admission import (
    CONFIGURATION,
    claim_patch,
    review_answer,
    webhook_configuration,
    webhook_hosts,
)
from tuxio.operator.claims import ClaimAtAdmission, Claims
from tuxio.operator.events import EventBudget
from tuxio.operator.geo import Locator
from tuxio.operator.host_models import SandboxHostSpec
from tuxio.operator.index import ClusterIndex, SandboxBook
from tuxio.operator.inventory import Inventories, Warm
from tuxio.operator.labels import ASSIGNMENT
from tuxio.operator.launches import Launches
from tuxio.operator.placement import ADOPT_IF_MATCH, PlacementPolicy
from tuxio.operator.pool_models import SandboxPoolSpec
from tuxio.operator.records import HostRecord, Placed, PoolInfo
from tuxio.operator.scheduling import HostView, load_score
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


def test_claims_hold_for_their_ttl() -> None:
    clock = [100.0]
    claims = Claims(SandboxBook(), lambda: clock[0], ttl=600)
    claims.add("long")
    claims.add("short", ttl=5)
    assert claims.held("long")
    assert claims.taken("short")
    clock[0] += 10
    assert not claims.taken("short")  # the Sandbox was never stored: the container is free again
    assert claims.held("long")
    assert not claims.taken("never")


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


class Claimer:
    """The claim at admission over an index with one host (h1) and one pool (ns/warm)."""

    def __init__(self, *warm: Warm, hold: float = 120.0) -> None:
        self.clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC), 100.0)
        self.index = ClusterIndex(self.clock.monotonic)
        self.index.set_host(host("h1"))
        self.pool = PoolInfo(
            "pool-uid",
            "ns",
            "warm",
            SandboxPoolSpec.model_validate({"template": "busybox", "replicas": 2}),
        )
        self.index.set_pool(self.pool)
        self.inventories = Inventories()
        self.state = self.inventories.open(self.pool.uid, "ns", "warm")
        self.state.warm = {w.name: w for w in warm}
        self.state.loaded.set()
        self.claims = Claims(self.index.sandboxes, self.clock.monotonic)
        policy = PlacementPolicy(load_score, 2.0, Locator(None))
        self.claim = ClaimAtAdmission(
            self.index,
            self.inventories,
            self.claims,
            policy,
            self.clock,
            hold,
            Launches(self.clock.monotonic, self.clock.now),
        )


def new_sandbox(pool: str = "warm", name: str = "visitor", **spec: Any) -> dict[str, Any]:
    """A Sandbox as a mutating webhook sees it: no uid, no creationTimestamp yet."""
    return {
        "apiVersion": "tux.io/v1alpha1",
        "kind": "Sandbox",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"poolRef": {"name": pool}, **spec},
    }


def test_admit_claim_takes_a_warm_container_once() -> None:
    claimer = Claimer(Warm("w1", "h1", "busybox", "ph", True, 64 * 2**20, 1, etag="e1"), hold=30)
    decided = claimer.claim(new_sandbox())
    assert decided is not None
    assert decided["host"] == "h1"
    assert decided["containerName"] == "w1"
    assert decided["fromPool"] == "warm"
    assert decided[ADOPT_IF_MATCH] == "e1"  # the first PUT adopts it only if still warm
    scheduled = next(c for c in decided["conditions"] if c["type"] == "Scheduled")
    assert scheduled["reason"] == "ClaimedFromPool"
    json.dumps(decided)  # stored as an annotation
    assert claimer.claims.taken("w1")
    assert claimer.state.warm == {}
    assert claimer.state.last_take == 100.0  # the refill waits for claims to pause
    assert claimer.state.admitted == {"w1": (claimer.state.admitted["w1"][0], "ns/visitor")}
    # While held, the next Sandbox finds the pool empty: it is left to the operator.
    assert claimer.claim(new_sandbox(name="second")) is None
    claimer.clock.advance(31)
    assert not claimer.claims.taken("w1")  # held for admission_claim_seconds only
    # No Sandbox was stored with it: the next claim gives it back to the pool and takes it.
    again = claimer.claim(new_sandbox())
    assert again is not None and again["containerName"] == "w1"


def test_an_admission_claim_the_api_server_dropped_is_given_back_at_once() -> None:
    """The Sandbox is stored without the webhook's answer (past its timeout): when the
    operator places it, the container admission took for it is back in the pool at once,
    not when the hold ends."""
    warm = [Warm(f"w{i}", "h1", "busybox", "ph", True, 64 * 2**20, 1, etag=f"e{i}") for i in (1, 2)]
    claimer = Claimer(*warm, hold=120)
    decided = claimer.claim(new_sandbox())
    assert decided is not None and decided["containerName"] == "w1"
    assert set(claimer.state.warm) == {"w2"}
    assert claimer.claims.give_back_for(claimer.state, "ns/someone-else") == []
    assert claimer.claims.give_back_for(claimer.state, "ns/visitor") == ["w1"]
    assert set(claimer.state.warm) == {"w1", "w2"} and claimer.state.admitted == {}
    assert not claimer.claims.taken("w1")


def test_an_admission_claim_that_was_stored_is_forgotten_not_given_back() -> None:
    claimer = Claimer(Warm("w1", "h1", "busybox", "ph", True, 64 * 2**20, 1, etag="e1"), hold=5)
    assert claimer.claim(new_sandbox()) is not None
    # The Sandbox is stored with the claim: the index's book names the container.
    placed = Placed("uid-1", "ns", "visitor", "h1", "w1", "Pending", "", "Always", 64 * 2**20, 1,
                    None, deleting=False)  # fmt: skip
    claimer.index.sandboxes.set("uid-1", "ns", "visitor", placed)
    claimer.clock.advance(10)  # the hold is over, the container is a Sandbox's now
    claimer.claims.settle(claimer.state)
    assert claimer.state.admitted == {} and claimer.state.warm == {}
    assert claimer.claims.taken("w1")


@pytest.mark.parametrize(
    "body",
    [
        {"metadata": {"namespace": "ns"}, "spec": {"template": "busybox"}},  # no poolRef
        new_sandbox(pool="other"),  # no such pool
        new_sandbox(resources={"cpus": 0}),  # invalid: the API server refuses it next
    ],
)
def test_admit_claim_leaves_others_alone(body: dict[str, Any]) -> None:
    claimer = Claimer(Warm("w1", "h1", "busybox", "ph", True, 64 * 2**20, 1, etag="e1"))
    assert claimer.claim(body) is None
    assert "w1" in claimer.state.warm
    assert not claimer.claims.taken("w1")


def test_admit_claim_waits_for_no_inventory() -> None:
    claimer = Claimer(Warm("w1", "h1", "busybox", "ph", True, 64 * 2**20, 1, etag="e1"))
    claimer.state.loaded.clear()  # just started: the inventory is being read
    assert claimer.claim(new_sandbox()) is None


def test_event_budget_holds_routine_events_to_its_rate() -> None:
    clock = [100.0]
    budget = EventBudget(per_second=10, burst=3, monotonic=lambda: clock[0])
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
