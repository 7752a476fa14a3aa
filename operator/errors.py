"""What a reconciliation can end with besides success, as controller-runtime has them.

Reconcilers raise these; the edges map them: the work queue retries a `RequeueAfter` after its
delay and waits for a change after a `TerminalError`; kopf's handlers turn them into
`kopf.TemporaryError` and `kopf.PermanentError`. No reconciler imports kopf for its errors.
"""

from __future__ import annotations

__all__ = ["ReconcileError", "RequeueAfter", "TerminalError"]


class ReconcileError(Exception):
    """A reconciliation that did not converge."""


class RequeueAfter(ReconcileError):
    """Not now: retrying after `delay` seconds may succeed (an agent unreachable, no host
    fits yet, the pool does not exist yet)."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class TerminalError(ReconcileError):
    """The same input fails again: wait for the object to change (the agent refused the spec,
    the host is gone, a container died under restartPolicy Never)."""
