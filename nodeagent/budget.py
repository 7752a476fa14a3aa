"""One bound on the output the agent holds for all commands at once.

Every session buffers at most `session_buffer_bytes` of unsent output, and a one-shot exec at
most its `max_output_bytes` of each stream; without a bound across them, enough concurrent
floods would still hold sessions x buffer (2048 x 2 MiB) in the agent. The budget is that
bound, shared:

- a session may always buffer a floor (128 KiB, what it reads ahead of an attached client);
  what it buffers past that it takes from the budget and gives back as its client is sent
  it. While the budget is spent, every session past its floor stops reading (its writer in
  the container blocks, as when its own buffer is full) and is resumed when some output has
  been sent. An attached terminal, which never reads past the floor, never waits on the
  budget: other visitors' detached floods cannot freeze it;
- a one-shot exec reserves the most it may hold (stdin and both output caps) before it starts,
  and is refused with 429 when that does not fit: its output is needed whole at the end, so
  it cannot wait halfway.

The agent then holds at most the budget, plus the floor and one read (64 KiB) a session, plus
the replay history (at most `session_replay_bytes` a terminal): the last two are bounded per
session by `sessions_per_agent`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from .errors import OutputBudgetExhausted

__all__ = ["OutputBudget"]


class OutputBudget:
    """Bytes of output held by the agent's commands, against `total`."""

    __slots__ = ("_waiting", "total", "used")

    def __init__(self, total: int) -> None:
        if total <= 0:
            raise ValueError("the output budget must be positive")
        self.total = total
        self.used = 0
        # Sessions stopped because the budget was spent: resumed (in order) once it is not.
        self._waiting: dict[object, Callable[[], None]] = {}

    @property
    def spent(self) -> bool:
        return self.used >= self.total

    def take(self, size: int) -> None:
        """Count `size` bytes held (a session read them)."""
        self.used += size

    def give(self, size: int) -> None:
        """`size` bytes are no longer held; waiting sessions resume while there is room."""
        self.used -= size
        while self._waiting and not self.spent:
            key = next(iter(self._waiting))
            self._waiting.pop(key)()

    def wait(self, key: object, resume: Callable[[], None]) -> None:
        """Call `resume` once the budget has room again (a session paused for it)."""
        self._waiting[key] = resume

    def forget(self, key: object) -> None:
        self._waiting.pop(key, None)

    @contextlib.contextmanager
    def reserve(self, size: int, what: str) -> Iterator[None]:
        """Hold `size` bytes for the duration, or refuse at once (OutputBudgetExhausted)."""
        if self.used + size > self.total:
            raise OutputBudgetExhausted(
                f"{what} may hold {size} bytes of output, and the agent's output budget "
                f"(output_budget_bytes, {self.total}) has {max(self.total - self.used, 0)} "
                "left: lower max_output_bytes, or retry when other commands have finished"
            )
        self.used += size
        try:
            yield
        finally:
            self.give(size)
