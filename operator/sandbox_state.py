"""One Sandbox as a reconciliation sees it: what it loaded (immutable), and its status as
the API has it plus the decided fields not written yet (written only where they differ)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .conditions import status_changes
from .kube import Kube
from .models import SandboxSpec
from .records import assignment_of

__all__ = ["Loaded", "StatusWriter"]


@dataclass(frozen=True)
class Loaded:
    """One Sandbox as the API had it when this reconciliation began (immutable)."""

    uid: str
    namespace: str
    name: str
    generation: int
    created: str
    spec: SandboxSpec
    body: Mapping[str, Any]
    recorded: Mapping[str, Any]  # the placement as recorded: status, else the annotation

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Loaded:
        meta = body["metadata"]
        return cls(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            generation=int(meta.get("generation") or 0),
            created=meta["creationTimestamp"],
            spec=SandboxSpec.model_validate(body.get("spec") or {}),
            body=body,
            recorded=assignment_of(body),
        )

    @property
    def status(self) -> Mapping[str, Any]:
        return self.body.get("status") or {}

    @property
    def finalizers(self) -> tuple[str, ...]:
        return tuple(self.body["metadata"].get("finalizers") or ())

    @property
    def placed(self) -> bool:
        """Whether status records the placement (else it is being placed)."""
        return bool(self.status.get("host"))


class StatusWriter:
    """A Sandbox's status as the API has it, and the decided fields not written yet.

    `write` sends only the fields that differ from what the API has, together with the
    pending decision (one status write for a new Sandbox: the decision's fields with the
    agent's answer)."""

    def __init__(self, api: Kube, namespace: str, name: str, current: Mapping[str, Any]):
        self.api = api
        self.namespace = namespace
        self.name = name
        self.written: dict[str, Any] = dict(current)
        self.pending: dict[str, Any] = {}

    @property
    def wanted(self) -> dict[str, Any]:
        """The status as it will be once the pending fields are written."""
        return {**self.written, **self.pending}

    def decide(self, fields: Mapping[str, Any]) -> None:
        self.pending.update(fields)

    async def write(
        self, new: Mapping[str, Any], with_pending: bool = True, withhold: Collection[str] = ()
    ) -> None:
        """Write `new` (and the pending decision, less the fields in `withhold`, which stay
        pending for a later write)."""
        changes = status_changes(self.wanted, new)
        if with_pending:
            for key, value in self.pending.items():
                if key not in withhold:
                    changes.setdefault(key, value)
        if not changes:
            return
        await self.api.patch_sandbox_status(self.namespace, self.name, changes)
        self.written.update(changes)
        if with_pending:
            self.pending = {k: v for k, v in self.pending.items() if k in withhold}
