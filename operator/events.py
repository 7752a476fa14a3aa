"""Kubernetes Events about tuxio objects: routine ones within a budget, warnings always.

Each Event is an API write, and a frontend making a Sandbox per visitor would otherwise add one
to every claim; so routine (Normal) Events go through a token bucket, as the kubelet limits its
own (qps and burst), and every one of them is in the operator's log, posted or not. Warnings are
never limited. Posting is kopf's (`kopf.info`, `kopf.warn`: queued, written in the background).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

import kopf

__all__ = ["EventBudget", "EventSink", "KopfEvents"]

log = logging.getLogger(__name__)


class EventSink(Protocol):
    """Where reconcilers tell what happened to an object."""

    def normal(self, body: Mapping[str, Any], reason: str, message: str) -> None: ...

    def warning(self, body: Mapping[str, Any], reason: str, message: str) -> None: ...


class EventBudget:
    """A token bucket: `per_second` on average, `burst` at once."""

    def __init__(self, per_second: float, burst: int, monotonic: Callable[[], float]) -> None:
        self.per_second = per_second
        self.burst = burst
        self._monotonic = monotonic
        self._tokens = float(burst)
        self._at = monotonic()

    def take(self) -> bool:
        now = self._monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class KopfEvents:
    """Events posted through kopf, routine ones within `budget`."""

    def __init__(self, budget: EventBudget) -> None:
        self.budget = budget

    def normal(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        meta = body.get("metadata") or {}
        log.info("%s/%s: %s: %s", meta.get("namespace"), meta.get("name"), reason, message)
        if self.budget.take():
            kopf.info(_target(body), reason=str(reason), message=message)

    def warning(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        kopf.warn(_target(body), reason=str(reason), message=message)


def _target(body: Mapping[str, Any]) -> kopf.Body:
    """The object an Event is about (kopf reads only its apiVersion, kind and metadata)."""
    return cast(kopf.Body, body)
