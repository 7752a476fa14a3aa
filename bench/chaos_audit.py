"""What a chaos run must leave behind, judged from what the API and the agent's host show.

Pure: `audit` takes a snapshot (the Sandboxes and SandboxPools from the API server, the
agent's containers, what is on the agent's host: the LXC path's directories, LXC's own list,
the mounts under it; the agent's log) and the run's history (the container names seen in
Sandboxes, how far each pool was scaled down), and returns the figures and the problems.

Pool creations are counted from the agent's side: every `clone finished` line of its log (the
log is appended to across the agent's restarts) names a container it made, and a
warm container is named `pool-<first 8 of the pool's UID>-<random>`. A warm container
is accounted for once it was claimed (the agent reconfigured it for a Sandbox, or a Sandbox
named it), is still warm, or was destroyed unclaimed while the pool was being scaled down,
at most as many as the scale-downs took away. Anything more is over-creation (a stale view
of the pool making containers it did not need), whatever the end state looks like.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HostView", "History", "audit", "pool_prefix"]

POOL_UID = "tux.io/pool-uid"
SANDBOX_UID = "tux.io/sandbox-uid"
CLONE = re.compile(r"clone finished: (\S+) on cores ")
RECONFIGURED = re.compile(r"reconfigured (\S+) \(spec ")
DESTROYED = re.compile(r"destroy finished: (\S+)")


def pool_prefix(uid: str) -> str:
    """The prefix of the names of a pool's warm containers (operator/pool_filler.py)."""
    return f"pool-{uid[:8]}-"


@dataclass(frozen=True)
class HostView:
    """What is on the agent's host, read with LXC's tools and the file system."""

    directories: frozenset[str]  # entries of the LXC path
    lxc_names: frozenset[str]  # lxc-ls
    mounted: frozenset[str]  # containers with something mounted under their directory
    agent_containers: tuple[Mapping[str, Any], ...]  # GET /v1/containers
    agent_log: str


@dataclass
class History:
    """What the churn did: every container name a Sandbox was seen naming, and per pool UID
    the replicas that scale-downs took away (sum of every decrease)."""

    claimed_seen: set[str] = field(default_factory=set)
    scaled_down: Counter[str] = field(default_factory=Counter)


def _desired_phase(sandbox: Mapping[str, Any]) -> str:
    return str((sandbox.get("spec") or {}).get("state") or "Running")


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def audit(
    sandboxes: Iterable[Mapping[str, Any]],
    pools: Iterable[Mapping[str, Any]],
    host: HostView,
    history: History,
) -> tuple[dict[str, Any], list[str]]:
    """The figures of the end state and every problem found (empty: all holds)."""
    sandboxes, pools = list(sandboxes), list(pools)
    problems: list[str] = []

    # Every Sandbox in the phase its spec asks for, none stuck in deletion.
    wrong = []
    for sbx in sandboxes:
        phase = (sbx.get("status") or {}).get("phase")
        if (sbx.get("metadata") or {}).get("deletionTimestamp"):
            wrong.append(f"{_name(sbx)} is still being deleted (phase {phase})")
        elif phase != _desired_phase(sbx):
            wrong.append(f"{_name(sbx)} is {phase}, its spec asks for {_desired_phase(sbx)}")
    problems += wrong

    # One container, one Sandbox.
    named = Counter(
        (str(s["status"].get("host")), str(s["status"]["containerName"]))
        for s in sandboxes
        if (s.get("status") or {}).get("containerName")
    )
    twice = sorted(f"{c} on {h} ({n} Sandboxes)" for (h, c), n in named.items() if n > 1)
    problems += [f"adopted twice: {t}" for t in twice]

    # Nothing on the host that no Sandbox and no pool wants.
    uids = {str(s["metadata"]["uid"]) for s in sandboxes}
    pool_uids = {str(p["metadata"]["uid"]) for p in pools}
    wanted_names = {c for _, c in named}
    warm: Counter[str] = Counter()
    for container in host.agent_containers:
        labels = container.get("labels") or {}
        if labels.get(SANDBOX_UID) in uids:
            wanted_names.add(str(container["name"]))
        elif labels.get(POOL_UID) in pool_uids and SANDBOX_UID not in labels:
            wanted_names.add(str(container["name"]))
            warm[str(labels[POOL_UID])] += 1
    known = {str(c["name"]) for c in host.agent_containers}
    leaked_dirs = sorted(host.directories - wanted_names)
    problems += [f"leaked on the host: {d}/" for d in leaked_dirs]
    problems += [f"LXC knows {n}, which no Sandbox or pool wants" for n in
                 sorted(host.lxc_names - wanted_names - set(leaked_dirs))]  # fmt: skip
    problems += [f"a mount is left under {n}/" for n in sorted(host.mounted - wanted_names)]
    problems += [f"{n} is wanted but the agent does not know it" for n in
                 sorted(wanted_names - known)]  # fmt: skip

    # Every pool at its replicas, and made no more containers than it needed.
    cloned = set(CLONE.findall(host.agent_log))
    reconfigured = set(RECONFIGURED.findall(host.agent_log))
    destroyed = set(DESTROYED.findall(host.agent_log))
    per_pool: dict[str, dict[str, int]] = {}
    for pool in pools:
        uid = str(pool["metadata"]["uid"])
        replicas = int((pool.get("spec") or {}).get("replicas") or 0)
        prefix = pool_prefix(uid)
        made = {n for n in cloned if n.startswith(prefix)}
        claimed = {n for n in made if n in reconfigured or n in history.claimed_seen}
        unclaimed_gone = {n for n in made - claimed if n in destroyed}
        allowance = history.scaled_down[uid]
        needed = len(claimed) + replicas + min(len(unclaimed_gone), allowance)
        per_pool[_name(pool)] = {
            "replicas": replicas,
            "warm": warm[uid],
            "created": len(made),
            "claimed": len(claimed),
            "destroyedUnclaimed": len(unclaimed_gone),
            "scaledDownBy": allowance,
            "needed": needed,
        }
        if warm[uid] != replicas:
            problems.append(f"pool {_name(pool)} has {warm[uid]} warm containers, wants {replicas}")
        if len(made) != needed:
            problems.append(
                f"pool {_name(pool)}: the agent made {len(made)} warm containers, the pool "
                f"needed {needed} ({len(claimed)} claimed, {replicas} warm, "
                f"{min(len(unclaimed_gone), allowance)} of {len(unclaimed_gone)} destroyed "
                f"unclaimed covered by scale-downs of {allowance})"
            )

    figures = {
        "sandboxes": len(sandboxes),
        "sandboxesInWrongPhase": len(wrong),
        "adoptedTwice": len(twice),
        "leakedDirectories": len(leaked_dirs),
        "containersOnHost": len(host.directories),
        "agentCreations": len(cloned),
        "pools": per_pool,
    }
    return figures, problems
