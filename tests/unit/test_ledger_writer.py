"""The ledger's writer in the operator: a ledger that cannot be written never holds up a
deletion, and what it could not write is written once it can."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.unit.fakes import sandbox
from tuxio.ledger.store import Ledger
from tuxio.operator.backoff import Backoff
from tuxio.operator.ledger_writer import LedgerWriter


def test_a_final_entry_waits_at_most_its_patience_and_is_written_later(tmp_path: Path) -> None:
    blocked = tmp_path / "not-yet"
    blocked.write_text("a file where the database's directory must go")
    url = f"sqlite:///{blocked}/ledger.sqlite3"

    async def scenario() -> tuple[bool, bool, int]:
        writer = LedgerWriter(url, lambda _: None, Backoff(first=0.05, cap=0.05), 0.3)
        body = sandbox(spec={"template": "debian"}, status={"phase": "Running"})
        stored_while_broken = await writer.record(body, None)
        batches_then = writer.batches
        blocked.unlink()  # the database can be made now
        writer.url = f"sqlite:///{blocked}/ledger.sqlite3"
        # Patience enough for any machine: the question is whether it is stored, not how fast
        # (0.3 s was too little on a machine held to half a core: make test-slow).
        writer.record_patience = 120.0
        stored_after = await writer.record(body, None)
        await writer.close()
        return stored_while_broken, stored_after, batches_then

    stored_while_broken, stored_after, batches_then = asyncio.run(scenario())
    assert stored_while_broken is False
    assert batches_then == 0
    assert stored_after is True
    ledger = Ledger.open(url)
    try:
        assert ledger.counts()[0] == 1  # the Sandbox is in, once
    finally:
        ledger.close()
