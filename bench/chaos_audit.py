"""What a chaos run must leave behind, judged from what the API and the agent's host show.

Pure: `audit` takes a snapshot (the Sandboxes and SandboxPools from the API server, the
agent's containers, what is on the agent's host: the LXC path's directories, LXC's own list,
the mounts under it; the agent's log), the run's history (the container names seen in
Sandboxes, how far each pool was scaled down) and the operator's log, and returns the figures
and the problems.

Pool creations are counted from the agent's side: every `clone finished` line of its log (the
log is appended to across the agent's restarts) names a container it made, and a
warm container is named `pool-<first 8 of the pool's UID>-<random>`. A warm container
is accounted for once it was claimed (the agent reconfigured it for a Sandbox, or a Sandbox
named it), is still warm, or was destroyed unclaimed by a scale-down: at each, at most the
decrease, and at most the unclaimed ones beyond the new replicas that existed (or were being
made) until the operator showed it had seen the new replicas, as the log's timestamps tell.
A destroyed unclaimed container is also accounted for by each claimed container the
operator gave back at the end of its hold, no Sandbox having been stored with the claim (its
log names each): the pool replaced it when it was taken, and had one too many once it was back.
Anything more is over-creation (a stale view of the pool making containers it did not need),
whatever the end state looks like.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "History",
    "HostView",
    "audit",
    "given_back",
    "lives",
    "pool_prefix",
    "scale_down_removals",
]

POOL_UID = "tux.io/pool-uid"
SANDBOX_UID = "tux.io/sandbox-uid"
# The operator's line for a claimed warm container given back once its hold ended, no Sandbox
# having been stored with that claim (tuxio.operator.claims.HOLD_ENDED).
GIVEN_BACK = re.compile(
    r"claim of \S+ never stored: (?P<prefix>pool-[0-9a-f]{8}-)\S+ back in the pool "
    r"\(its hold ended\)"
)
# The agent's log lines (format of tuxio.nodeagent.cli) that tell a container's life.
LINE = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?"
    r"(?P<what>clone started|clone finished|reconfigured|destroy started|destroy finished):? "
    r"(?P<name>[^\s:]+)"
)


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
    """What the churn did: every container name a Sandbox was seen naming, and each scale-down
    of a pool: (pool UID, wall-clock time of the request, wall-clock time the pool's
    status.observedGeneration was first seen at the generation the request made, replicas
    before, replicas after)."""

    claimed_seen: set[str] = field(default_factory=set)
    scale_downs: list[tuple[str, float, float, int, int]] = field(default_factory=list)


@dataclass
class _Life:
    """One container's life as the agent's log tells it (wall-clock seconds)."""

    started: float | None = None
    finished: float | None = None
    reconfigured: float | None = None
    destroy_started: float | None = None
    destroyed: float | None = None


def lives(agent_log: str) -> dict[str, _Life]:
    """Each container's clone, first reconfiguration (a claim) and destruction, by name."""
    found: dict[str, _Life] = {}
    for line in agent_log.splitlines():
        matched = LINE.match(line)
        if not matched:
            continue
        at = datetime.strptime(matched["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        life = found.setdefault(matched["name"], _Life())
        what = matched["what"]
        if what == "clone started" and life.started is None:
            life.started = at
        elif what == "clone finished":
            life.finished = at
        elif what == "reconfigured" and life.reconfigured is None:
            life.reconfigured = at
        elif what == "destroy started":
            life.destroy_started = at
        elif what == "destroy finished":
            life.destroyed = at
    return found


def _killed_mid_destroy(found: Mapping[str, _Life], host: HostView) -> None:
    """A destroy the agent was killed in after LXC had removed the container, before it
    logged the end (found by make test-slow: one container short in the count): destroyed
    when its destroy started, if nothing of it is left."""
    there = {str(c["name"]) for c in host.agent_containers} | host.directories | host.lxc_names
    for name, life in found.items():
        if life.destroyed is None and life.destroy_started is not None and name not in there:
            life.destroyed = life.destroy_started


def scale_down_removals(history: History, uid: str, prefix: str, found: Mapping[str, _Life]) -> int:
    """How many unclaimed warm containers the pool's scale-downs may have removed: at each,
    those beyond the new replicas of the ones that existed when it was asked or were started
    before the operator showed it had seen it, at most the decrease.

    Bounded by what the operator shows, not by a fixed delay: it may act on an older spec for
    as long as its watch lags, and after a restart of the API server that was 10 s (found by
    make test-slow: a scale-up to 4 and the scale-down to 0 after it reached the operator
    together, and it made the 4 first). Its fill loop writes a generation as observed at the
    top of the round that follows the one that started the last creations for the spec
    before (operator/pool_filler.py): their first PUTs were sent before that write, which the
    churn then reads back from the API server, and one whose answer was lost is asked for
    again only while the replicas the loop read last want it."""
    allowed = 0
    for pool_uid, asked, observed, before, after in history.scale_downs:
        if pool_uid != uid:
            continue
        existing = sum(
            1
            for name, life in found.items()
            if name.startswith(prefix)
            and life.started is not None
            and life.started <= observed
            and not (life.reconfigured is not None and life.reconfigured <= asked)
            and not (life.destroyed is not None and life.destroyed <= asked)
        )
        allowed += min(before - after, max(0, existing - after))
    return allowed


def given_back(operator_log: str) -> Counter[str]:
    """Per pool prefix, how many claimed warm containers the operator gave back once their
    hold ended, no Sandbox having been stored with the claim: a claim at admission whose create
    the API server then refused (found by the chaos suite: while etcd was restarted), or a
    decision whose write failed and was never tried again. The pool replaced each when it
    was taken; once back, it is one too many. (One given back before a placement is taken
    again at once, and leaves no surplus: not counted.)"""
    # Every line: one container may be taken and given back more than once (taken oldest
    # first, it is the next one a claim takes), and the pool replaced it each time.
    return Counter(m["prefix"] for m in GIVEN_BACK.finditer(operator_log))


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
    operator_log: str,
) -> tuple[dict[str, Any], list[str]]:
    """The figures of the end state and every problem found (empty: all holds);
    `operator_log` is the operator's log over the run, across its restarts."""
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
    problems += [
        f"LXC knows {n}, which no Sandbox or pool wants"
        for n in sorted(host.lxc_names - wanted_names - set(leaked_dirs))
    ]
    problems += [f"a mount is left under {n}/" for n in sorted(host.mounted - wanted_names)]
    problems += [
        f"{n} is wanted but the agent does not know it" for n in sorted(wanted_names - known)
    ]

    # Every pool at its replicas, and made no more containers than it needed.
    found = lives(host.agent_log)
    _killed_mid_destroy(found, host)
    back = given_back(operator_log)
    cloned = {n for n, life in found.items() if life.finished is not None}
    per_pool: dict[str, dict[str, int]] = {}
    for pool in pools:
        uid = str(pool["metadata"]["uid"])
        replicas = int((pool.get("spec") or {}).get("replicas") or 0)
        prefix = pool_prefix(uid)
        made = {n for n in cloned if n.startswith(prefix)}
        claimed = {
            n for n in made if found[n].reconfigured is not None or n in history.claimed_seen
        }
        unclaimed_gone = {n for n in made - claimed if found[n].destroyed is not None}
        removals = scale_down_removals(history, uid, prefix, found)
        allowance = removals + back[prefix]
        needed = len(claimed) + replicas + min(len(unclaimed_gone), allowance)
        per_pool[_name(pool)] = {
            "replicas": replicas,
            "warm": warm[uid],
            "created": len(made),
            "claimed": len(claimed),
            "destroyedUnclaimed": len(unclaimed_gone),
            "scaleDownRemovals": removals,
            "claimsNeverStored": back[prefix],
            "needed": needed,
        }
        if warm[uid] != replicas:
            problems.append(f"pool {_name(pool)} has {warm[uid]} warm containers, wants {replicas}")
        if len(made) != needed:
            problems.append(
                f"pool {_name(pool)}: the agent made {len(made)} warm containers, the pool "
                f"needed {needed} ({len(claimed)} claimed, {replicas} warm, "
                f"{min(len(unclaimed_gone), allowance)} of {len(unclaimed_gone)} destroyed "
                f"unclaimed covered by {removals} that scale-downs removed and "
                f"{back[prefix]} claims never stored)"
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
