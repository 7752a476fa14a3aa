"""The chaos suite's judge (bench/chaos_audit.py): what it accepts and what it flags, on end
states and agent logs made by hand."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from bench.chaos_audit import History, HostView, audit

POOL_UID = "0123456789abcdef"
PREFIX = "pool-01234567-"
T0 = datetime(2026, 1, 1, 12, 0, 0).timestamp()


def at(seconds: float) -> str:
    return datetime.fromtimestamp(T0 + seconds).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]


def line(seconds: float, text: str) -> str:
    return f"{at(seconds)} INFO tuxio.nodeagent.service: {text}"


def cloned(seconds: float, name: str) -> list[str]:
    return [
        line(seconds, f"clone started: {name} from /t/rootfs"),
        line(seconds + 0.01, f"clone finished: {name} on cores 1"),
    ]


def pool(replicas: int) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "chaos", "name": "warm", "uid": POOL_UID},
        "spec": {"replicas": replicas},
    }


def sandbox(name: str, container: str, phase: str = "Running", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "chaos", "name": name, "uid": f"uid-{name}"},
        "spec": spec,
        "status": {"phase": phase, "host": "h", "containerName": container},
    }


def warm(name: str) -> dict[str, Any]:
    return {"name": name, "labels": {"tux.io/pool-uid": POOL_UID}}


def owned(name: str, sbx: str) -> dict[str, Any]:
    return {"name": name, "labels": {"tux.io/sandbox-uid": f"uid-{sbx}"}}


def view(containers: list[dict[str, Any]], log: list[str], extra: set[str] = set()) -> HostView:  # noqa: B006
    names = {c["name"] for c in containers} | extra
    return HostView(
        frozenset(names), frozenset(names), frozenset(), tuple(containers), "\n".join(log)
    )


def test_a_clean_run_holds() -> None:
    # Two warm made, one claimed by s1 (reconfigured), one refilled; then 2 -> 1 removed one.
    log = [
        *cloned(0, f"{PREFIX}a"),
        *cloned(0, f"{PREFIX}b"),
        line(1, f"reconfigured {PREFIX}a (spec x -> y)"),
        *cloned(1.5, f"{PREFIX}c"),
        line(5, f"destroy finished: {PREFIX}b"),
    ]
    history = History(scale_downs=[(POOL_UID, T0 + 4, T0 + 4.1, 2, 1)])
    host = view([owned(f"{PREFIX}a", "s1"), warm(f"{PREFIX}c")], log)
    figures, problems = audit([sandbox("s1", f"{PREFIX}a")], [pool(1)], host, history, "")
    assert problems == []
    assert figures["pools"]["chaos/warm"] == {
        "replicas": 1,
        "warm": 1,
        "created": 3,
        "claimed": 1,
        "destroyedUnclaimed": 1,
        "scaleDownRemovals": 1,
        "claimsNeverStored": 0,
        "needed": 3,
    }


def test_over_creation_is_caught_though_the_end_state_looks_right() -> None:
    # Replicas 1 all along: a stale view made a second one, removed again as surplus.
    log = [
        *cloned(0, f"{PREFIX}a"),
        *cloned(0.5, f"{PREFIX}b"),
        line(6, f"destroy finished: {PREFIX}b"),
    ]
    host = view([warm(f"{PREFIX}a")], log)
    _, problems = audit([], [pool(1)], host, History(), "")
    assert problems == [
        "pool chaos/warm: the agent made 2 warm containers, the pool needed 1 (0 claimed, "
        "1 warm, 0 of 1 destroyed unclaimed covered by 0 that scale-downs removed and 0 claims "
        "never stored)"
    ]


def test_a_scale_down_covers_only_what_existed_beyond_its_replicas() -> None:
    # 3 -> 2 with one warm container: nothing to remove, so a removal is over-creation.
    log = [
        *cloned(0, f"{PREFIX}a"),
        *cloned(10, f"{PREFIX}b"),
        line(12, f"destroy finished: {PREFIX}b"),
    ]
    history = History(scale_downs=[(POOL_UID, T0 + 5, T0 + 5.1, 3, 2)])
    _, problems = audit([], [pool(1)], view([warm(f"{PREFIX}a")], log), history, "")
    assert len(problems) == 1 and "made 2" in problems[0]


def test_a_scale_down_the_operator_saw_late_covers_what_it_made_until_then() -> None:
    # 4 -> 0 asked at 5 s; the operator's watch lagged (an API server restart) and it made 4
    # at 14 s for the replicas before, then showed it had seen 0 at 15 s and removed them.
    log = [*(f for n in "abcd" for f in cloned(14, f"{PREFIX}{n}"))]
    log += [line(16, f"destroy finished: {PREFIX}{n}") for n in "abcd"]
    for observed, made_too_many in ((T0 + 15, False), (T0 + 13, True)):
        history = History(scale_downs=[(POOL_UID, T0 + 5, observed, 4, 0)])
        _, problems = audit([], [pool(0)], view([], log), history, "")
        assert bool(problems) is made_too_many, problems


def test_a_claim_never_stored_covers_the_container_made_for_it() -> None:
    # Replicas 1: admission took a, the pool made b for it; the create was refused, a came
    # back after its hold and one of the two went as a surplus.
    log = [
        *cloned(0, f"{PREFIX}a"),
        *cloned(1, f"{PREFIX}b"),
        line(5, f"destroy finished: {PREFIX}b"),
    ]
    gave_back = f"claim of chaos/s1 never stored: {PREFIX}a back in the pool (its hold ended)"
    operator_log = "\n".join(
        [
            "pool chaos/warm: 1 warm",
            gave_back,
            # Given back before a placement took one again: no surplus, not counted.
            f"claim of chaos/s3 never stored: {PREFIX}c back in the pool",
            # Another pool's.
            "claim of chaos/s2 never stored: pool-99999999-x back in the pool (its hold ended)",
        ]
    )
    host = view([warm(f"{PREFIX}a")], log)
    figures, problems = audit([], [pool(1)], host, History(), operator_log)
    assert problems == []
    assert figures["pools"]["chaos/warm"]["claimsNeverStored"] == 1
    # Without that line the same log is over-creation.
    _, problems = audit([], [pool(1)], host, History(), "")
    assert len(problems) == 1 and "made 2" in problems[0]


@pytest.mark.parametrize("left", [False, True])
def test_a_destroy_cut_short_by_a_kill_counts_once_nothing_is_left(left: bool) -> None:
    # 2 -> 1: b's destroy started, the agent was killed before it logged the end.
    log = [
        *cloned(0, f"{PREFIX}a"),
        *cloned(0, f"{PREFIX}b"),
        line(5, f"destroy started: {PREFIX}b"),
    ]
    history = History(scale_downs=[(POOL_UID, T0 + 4, T0 + 4.1, 2, 1)])
    containers = [warm(f"{PREFIX}a")]
    host = view(containers, log, {f"{PREFIX}b"} if left else set())
    _, problems = audit([], [pool(1)], host, history, "")
    if left:  # its directory is still there: not destroyed, so it is made and unaccounted
        assert any("made 2" in p for p in problems), problems
    else:
        assert problems == []


@pytest.mark.parametrize(
    ("sandboxes", "containers", "extra", "expected"),
    [
        (
            [sandbox("s1", "sbx-1", phase="Failed")],
            [owned("sbx-1", "s1")],
            set(),
            "chaos/s1 is Failed, its spec asks for Running",
        ),
        (
            [sandbox("s1", "sbx-1", phase="Running", state="Stopped")],
            [owned("sbx-1", "s1")],
            set(),
            "chaos/s1 is Running, its spec asks for Stopped",
        ),
        (
            [sandbox("s1", "sbx-1"), sandbox("s2", "sbx-1")],
            [owned("sbx-1", "s1")],
            set(),
            "adopted twice: sbx-1 on h (2 Sandboxes)",
        ),
        ([], [], {"sbx-gone"}, "leaked on the host: sbx-gone/"),
        ([], [owned("sbx-9", "nobody")], set(), "leaked on the host: sbx-9/"),
        ([sandbox("s1", "sbx-1")], [], set(), "sbx-1 is wanted but the agent does not know it"),
    ],
)
def test_what_is_flagged(
    sandboxes: list[dict[str, Any]],
    containers: list[dict[str, Any]],
    extra: set[str],
    expected: str,
) -> None:
    _, problems = audit(sandboxes, [], view(containers, [], extra), History(), "")
    assert expected in problems
