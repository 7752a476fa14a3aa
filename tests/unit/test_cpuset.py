"""cpuset parsing and the least-used, name-seeded core allocation."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from tuxio.nodeagent.cpuset import (
    allocate_cpuset,
    core_load,
    default_reserved,
    format_cpuset,
    parse_cpuset,
    split_cores,
)


@pytest.mark.parametrize(
    ("text", "cores"),
    [
        ("0", [0]),
        ("0-3", [0, 1, 2, 3]),
        ("0-2,5", [0, 1, 2, 5]),
        ("1,3,5-6", [1, 3, 5, 6]),
        ("", []),
    ],
)
def test_parse_and_format_round_trip(text: str, cores: list[int]) -> None:
    assert parse_cpuset(text) == cores
    assert format_cpuset(cores) == text


@pytest.mark.parametrize("bad", ["3-1", "a", "1-", "-"])
def test_parse_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError, match=r"bad cpu range|invalid literal"):
        parse_cpuset(bad)


@pytest.mark.parametrize(("total", "reserved"), [(1, 0), (2, 1), (4, 1), (5, 2), (8, 2), (64, 2)])
def test_default_reserved(total: int, reserved: int) -> None:
    assert default_reserved(total) == reserved


def test_split_keeps_the_first_cores_for_the_host() -> None:
    assert split_cores([3, 0, 2, 1, 4, 5, 6, 7], 2) == ([0, 1], [2, 3, 4, 5, 6, 7])
    with pytest.raises(ValueError, match="at least one must be shared"):
        split_cores([0, 1], 2)


def test_least_loaded_cores_win() -> None:
    load = {2: 3, 3: 0, 4: 1, 5: 0, 6: 2, 7: 5}
    assert allocate_cpuset("web-1", 2, load) == [3, 5]
    assert allocate_cpuset("web-1", 3, load) == [3, 4, 5]


def test_deterministic_for_a_name() -> None:
    load = dict.fromkeys(range(2, 8), 0)
    assert all(
        allocate_cpuset("same", 2, load) == allocate_cpuset("same", 2, load) for _ in range(5)
    )


def test_ties_spread_over_all_combinations() -> None:
    # The seed's setting: 6 shared cores, 2 each. With equal load every one of the 15 pairs
    # is reachable from some name, not only neighbouring pairs.
    load = dict.fromkeys(range(2, 8), 0)
    seen = {tuple(allocate_cpuset(f"sandbox-{i}", 2, load)) for i in range(400)}
    assert seen == set(itertools.combinations(range(2, 8), 2))


def test_neighbours_balance_as_they_arrive() -> None:
    shared = list(range(2, 8))
    assigned: list[list[int]] = []
    for i in range(30):
        assigned.append(allocate_cpuset(f"visitor-{i}", 2, core_load(assigned, shared)))
    counts = Counter(core for cores in assigned for core in cores)
    assert set(counts.values()) == {10}  # 30 containers x 2 cores / 6 cores


@pytest.mark.parametrize(("cpus", "message"), [(0, "at least one"), (7, "only 6 shared")])
def test_impossible_requests(cpus: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        allocate_cpuset("x", cpus, dict.fromkeys(range(2, 8), 0))


def test_core_load_counts_only_shared_cores() -> None:
    assert core_load([[1, 2], [2], [0, 2]], [1, 2, 3]) == {1: 1, 2: 3, 3: 0}
