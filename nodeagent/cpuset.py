"""Which cores a container runs on: the seed's cpuset trick, improved.

The host keeps its first cores; every container is pinned to `cpus` of the remaining shared
cores. tux.io picked a pair by hashing the name over the 15 pairs of 6 cores, so two busy
neighbours could land on the same pair. Here the choice is the least-used combination (the
`cpus` cores with the fewest containers on them, which minimises both the total and the
highest load of the chosen set), and ties are broken by a permutation seeded by the name: the
same inputs always give the same answer and equal candidates are spread evenly.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = [
    "allocate_cpuset",
    "core_load",
    "default_reserved",
    "format_cpuset",
    "parse_cpuset",
    "split_cores",
]


def parse_cpuset(text: str) -> list[int]:
    """'0-2,5' -> [0, 1, 2, 5]. Raises ValueError on anything else."""
    cores: set[int] = set()
    text = text.strip()
    if not text:
        return []
    for part in text.split(","):
        first, sep, last = part.partition("-")
        if sep:
            low, high = int(first), int(last)
            if high < low:
                raise ValueError(f"bad cpu range {part!r}")
            cores.update(range(low, high + 1))
        else:
            cores.add(int(first))
    return sorted(cores)


def format_cpuset(cores: Iterable[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5', the form the kernel writes back."""
    ordered = sorted(set(cores))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def default_reserved(total: int) -> int:
    """Cores kept for the host: 1 on hosts with up to 4 cores, 2 above (none on 1 core)."""
    if total <= 1:
        return 0
    return 1 if total <= 4 else 2


def split_cores(available: Sequence[int], reserved: int) -> tuple[list[int], list[int]]:
    """Split the host's cores into (reserved for the host, shared by containers)."""
    ordered = sorted(available)
    if not 0 <= reserved < len(ordered):
        raise ValueError(
            f"cannot reserve {reserved} of {len(ordered)} cores: at least one must be shared"
        )
    return ordered[:reserved], ordered[reserved:]


def core_load(assigned: Iterable[Sequence[int]], shared: Sequence[int]) -> dict[int, int]:
    """How many containers are pinned to each shared core."""
    counts: Counter[int] = Counter()
    for cores in assigned:
        counts.update(cores)
    return {core: counts.get(core, 0) for core in shared}


def _tie_break(name: str, core: int) -> bytes:
    return hashlib.blake2b(f"{name}/{core}".encode(), digest_size=8).digest()


def allocate_cpuset(name: str, cpus: int, load: dict[int, int]) -> list[int]:
    """Pick `cpus` cores out of the shared cores in `load` for container `name`.

    The least-loaded cores win; among equally loaded cores the order is a permutation
    derived from the name, so the result is deterministic and neighbours spread out.
    """
    if cpus < 1:
        raise ValueError("a container needs at least one core")
    if cpus > len(load):
        raise ValueError(f"{cpus} cpus asked for, only {len(load)} shared cores on this host")
    ranked = sorted(load, key=lambda core: (load[core], _tie_break(name, core)))
    return sorted(ranked[:cpus])
