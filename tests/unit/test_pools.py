"""The pool's fill plan and claims, without any I/O."""

from __future__ import annotations

import pytest

from tuxio.operator.inventory import PoolState, Warm
from tuxio.operator.pool_models import SandboxPoolSpec
from tuxio.operator.pool_policy import plan_pool, pool_hash, refill_hold

H = "current"


def warm(
    name: str,
    *,
    spec_hash: str = H,
    template: str = "busybox",
    ready: bool = True,
    host: str = "h1",
) -> Warm:
    return Warm(name, host, template, spec_hash, ready, 64 * 2**20, 1)


@pytest.mark.parametrize(
    ("containers", "replicas", "in_flight", "create", "delete"),
    [
        ([], 10, 0, 4, []),  # empty: fill, at most 4 at once
        ([], 10, 4, 0, []),  # the first 4 are still on their way
        ([warm("a"), warm("b")], 3, 0, 1, []),
        ([warm("a"), warm("b"), warm("c")], 3, 0, 0, []),
        (
            [warm("a"), warm("b"), warm("c", ready=False)],
            2,
            0,
            0,
            ["c"],
        ),  # scale down: not-ready first
        ([warm("a"), warm("b"), warm("c")], 1, 0, 0, ["a", "b"]),
        (
            [warm("a"), warm("x", template="debian")],
            2,
            0,
            1,
            ["x"],
        ),  # another template goes at once
        ([warm("a"), warm("o", spec_hash="old")], 2, 0, 1, []),  # old limits stay while needed
        ([warm("a"), warm("b"), warm("o", spec_hash="old")], 2, 0, 0, ["o"]),  # then go
    ],
)
def test_plan(
    containers: list[Warm], replicas: int, in_flight: int, create: int, delete: list[str]
) -> None:
    plan = plan_pool(containers, replicas, H, "busybox", in_flight, max_parallel=4)
    assert plan.create == create
    assert plan.delete == delete


def test_take_prefers_the_ranked_host_and_never_twice() -> None:
    state = PoolState("uid", "ns", "pool")
    state.warm = {
        w.name: w
        for w in [warm("a", host="h1"), warm("b", host="h2"), warm("c", host="h2", ready=False)]
    }
    first = state.take("busybox", ["h2", "h1"], 1.0)
    assert first is not None
    assert first.name == "b"
    second = state.take("busybox", ["h2", "h1"], 1.0)
    assert second is not None
    assert second.name == "a"
    assert state.take("busybox", ["h2", "h1"], 1.0) is None  # c is not ready
    assert state.wake.is_set()


def test_take_ignores_hosts_that_do_not_fit_and_other_templates() -> None:
    state = PoolState("uid", "ns", "pool")
    state.warm = {"a": warm("a", host="down"), "d": warm("d", template="debian")}
    assert state.take("busybox", ["h1"], 1.0) is None
    assert state.take("busybox", ["down"], 1.0) is not None


def test_pool_hash_follows_template_and_limits() -> None:
    base = SandboxPoolSpec.model_validate({"template": "busybox", "replicas": 3})
    assert pool_hash(base) == pool_hash(
        SandboxPoolSpec.model_validate({"template": "busybox", "replicas": 9})
    )
    assert pool_hash(base) != pool_hash(SandboxPoolSpec.model_validate({"template": "debian"}))
    assert pool_hash(base) != pool_hash(
        SandboxPoolSpec.model_validate({"template": "busybox", "resources": {"memory": "128Mi"}})
    )


@pytest.mark.parametrize(
    ("now", "last_take", "ready", "replicas", "hold"),
    [
        (10.0, 0.0, 5, 10, 0.0),  # no claim for long: refill now
        (10.0, 9.95, 5, 10, 0.05),  # a claim 50 ms ago: wait until 100 ms have passed
        (10.0, 10.0, 3, 10, 0.1),  # at the floor (a quarter of 10 is 2.5): still claims first
        (10.0, 10.0, 2, 10, 0.0),  # below it: refill at once, claims or not
        (10.0, 10.0, 0, 0, 0.1),  # an empty pool of zero replicas is not low
    ],
)
def test_refill_waits_for_claims_to_pause(
    now: float, last_take: float, ready: int, replicas: int, hold: float
) -> None:
    assert refill_hold(now, last_take, 0.1, ready, replicas, 0.25) == pytest.approx(hold)
