"""kopf's diff base, kept in status and built cheaply.

kopf compares each object's essence (spec, labels, annotations) with the essence it last
handled, to tell what changed. Its stock builder deep-copies the whole object first, status and
managedFields included, and then drops them: on a busy operator that copy is a tenth of the CPU
spent per event. This builder hands it only what the essence is made of.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import kopf

__all__ = ["LeanStatusDiffBase"]


class LeanStatusDiffBase(kopf.StatusDiffBaseStorage):
    """kopf's StatusDiffBaseStorage with the same essence, built from a slim copy."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        if extra_fields:  # handlers on status fields need the whole object: exactly as kopf
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata") or {}
        slim = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        slim["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
        return super().build(body=kopf.Body(cast(kopf.RawBody, slim)))
