"""The autoscaling policy (pure): grow at once on a miss and ahead of the claim rate, shrink
only after the idle cooldown, never beyond what the hosts hold or maxReplicas."""

from __future__ import annotations

import pytest

from tuxio.operator.pool_models import PoolAutoscaling, SandboxPoolSpec
from tuxio.operator.pool_policy import Demand, autoscaled_replicas, demand_of

AUTO = PoolAutoscaling(
    min_replicas=2,
    max_replicas=20,
    lead_seconds=60,
    window_seconds=300,
    scale_down_after_seconds=600,
)
ROOMY = 1000


@pytest.mark.parametrize(
    ("current", "demand", "room", "expected", "why"),
    [
        (2, Demand(0, 0, 0.0), ROOMY, 2, "no claims: min"),
        (0, Demand(0, 0, 0.0), ROOMY, 2, "below min: up to min at once"),
        (2, Demand(50, 0, 1.0), ROOMY, 10, "50 claims in 300 s: 60 s ahead is 10"),
        (2, Demand(51, 0, 1.0), ROOMY, 11, "rounded up"),
        (2, Demand(1, 3, 0.0), ROOMY, 5, "three misses: three more at once"),
        (10, Demand(1, 0, 599.0), ROOMY, 10, "idle, but not for the cooldown yet: held"),
        (10, Demand(0, 0, 600.0), ROOMY, 2, "idle past the cooldown: down to min"),
        (10, Demand(50, 0, 600.0), ROOMY, 10, "cooldown over, rate still wants 10"),
        (2, Demand(600, 0, 0.0), ROOMY, 20, "never beyond maxReplicas"),
        (2, Demand(50, 0, 0.0), 6, 6, "never beyond what the hosts hold"),
        (8, Demand(50, 4, 0.0), 6, 8, "hosts full: what the pool has is kept, not cut"),
    ],
)
def test_autoscaled_replicas(
    current: int, demand: Demand, room: int, expected: int, why: str
) -> None:
    assert autoscaled_replicas(current, AUTO, demand, room) == expected, why


def test_zero_at_night() -> None:
    night = PoolAutoscaling(min_replicas=0, max_replicas=5, scale_down_after_seconds=60)
    assert autoscaled_replicas(5, night, Demand(0, 0, 61.0), ROOMY) == 0
    assert autoscaled_replicas(0, night, Demand(1, 1, 0.0), ROOMY) == 1  # the first visitor


def test_demand_counts_the_window_only() -> None:
    demand = demand_of(
        [10.0, 100.0, 350.0, 399.0], misses=2, last_claim=399.0, now=400.0, window=300
    )
    assert demand == Demand(claims=3, misses=2, idle_seconds=1.0)


@pytest.mark.parametrize(
    ("autoscaling", "error"),
    [
        (
            {"minReplicas": 3, "maxReplicas": 2},
            None,
        ),  # CEL says so in the API server; pydantic takes it
        ({"maxReplicas": -1}, "greater than or equal to 0"),
        ({"minReplicas": 0}, "maxReplicas"),
    ],
)
def test_the_spec(autoscaling: dict[str, int], error: str | None) -> None:
    body = {"template": "debian", "autoscaling": autoscaling}
    if error is None:
        assert SandboxPoolSpec.model_validate(body).autoscaling is not None
        return
    with pytest.raises(ValueError, match=error):
        SandboxPoolSpec.model_validate(body)
