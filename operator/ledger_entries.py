"""What the usage ledger records of a Sandbox, read from its body (pure).

Everything comes from the object as the API server stores it, times included (creation,
the conditions' transitions, the deletion), so the same Sandbox read again after a restart
gives the same entry: the ledger's idempotent writes then change nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from tuxio.common.timeutil import parse_time
from tuxio.ledger.records import Entry, SandboxFacts
from tuxio.nodeagent.models import Usage

from .conditions import READY, SCHEDULED, Reason, find_condition
from .labels import CREATED_BY
from .models import SandboxSpec, bytes_of
from .records import assignment_of

__all__ = ["country_of", "creator_of", "entry_of"]


def entry_of(
    body: Mapping[str, Any],
    region_of: Callable[[str], str | None],
    final: Usage | None = None,
) -> Entry:
    """The ledger entry of a Sandbox; `final`: its counters read from the agent just before
    the container is destroyed; `region_of`: a host's region."""
    meta = body.get("metadata") or {}
    status = {**assignment_of(body), **{k: v for k, v in (body.get("status") or {}).items() if v}}
    spec = SandboxSpec.model_validate(body.get("spec") or {})
    scheduled = find_condition(status.get("conditions"), SCHEDULED)
    host = status.get("host")
    warm = scheduled.get("reason") == Reason.CLAIMED
    usage = status.get("usage") or {}
    facts = SandboxFacts(
        uid=meta["uid"],
        namespace=meta.get("namespace") or "",
        name=meta.get("name") or "",
        template=status.get("template") or spec.template,
        host=host,
        region=region_of(host) if host else None,
        pool=status.get("fromPool") or (spec.pool_ref.name if spec.pool_ref else None),
        launch=("warm" if warm else "cold") if host else None,
        cpus=spec.resources.cpus,
        memory_bytes=bytes_of(spec.resources.memory),
        cpu_seconds=final.cpu_seconds if final else usage.get("cpuSeconds"),
        memory_peak_bytes=final.memory_peak_bytes if final else None,
        country=country_of((status.get("placement") or {}).get("clientLocation")),
        creator=creator_of(meta),
    )
    return Entry(facts, _events(meta, status, warm, scheduled))


def _events(
    meta: Mapping[str, Any], status: Mapping[str, Any], warm: bool, scheduled: Mapping[str, Any]
) -> dict[str, datetime]:
    events: dict[str, datetime] = {}
    _add(events, "created", meta.get("creationTimestamp"))
    if warm:
        _add(events, "claimed", scheduled.get("lastTransitionTime"))
    ready = find_condition(status.get("conditions"), READY)
    if ready.get("status") == "True":
        _add(events, "ready", ready.get("lastTransitionTime"))
    elif ready.get("reason") == Reason.STOPPED:
        _add(events, "stopped", ready.get("lastTransitionTime"))
    _add(events, "deleted", meta.get("deletionTimestamp"))
    return events


def _add(events: dict[str, datetime], name: str, at: Any) -> None:
    if isinstance(at, str) and at:
        events[name] = parse_time(at)


def country_of(location: Any) -> str | None:
    """The ISO country of the placement's client location ('Amsterdam, NL' -> 'NL'): the
    visitor's country, never the address."""
    if not isinstance(location, str):
        return None
    last = location.rsplit(",", 1)[-1].strip()
    return last if len(last) == 2 and last.isalpha() and last.isupper() else None


def creator_of(meta: Mapping[str, Any]) -> str | None:
    """Who created the Sandbox: its tux.io/created-by label or annotation (the web front
    end and CI set one), else the field manager of its first write (kubectl's are 'kubectl')."""
    for key in ("labels", "annotations"):
        named = (meta.get(key) or {}).get(CREATED_BY)
        if named:
            return str(named)[:128]
    managed = meta.get("managedFields") or []
    if not managed:
        return None
    manager = str(managed[0].get("manager") or "")
    if manager.startswith("kubectl"):
        return "kubectl"
    return manager[:128] or None
