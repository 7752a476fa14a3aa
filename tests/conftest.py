"""Shared test set-up: every tier runs as root on a real host; nothing is skipped silently,
and nothing the session made is left behind (tests/leaks.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import PostgresServer, start_postgres


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every fixture's teardown: fail the run if anything the session made is still
    there (a container, a process, a mount, a loop device, a network namespace), whether the
    tests passed or not; then stop and remove it, so the next run starts clean."""
    from tests.leaks import clean, find_leftovers
    from tests.support import MADE, STARTED, stop_leftovers

    MADE.pids += [proc.pid for proc in STARTED]
    found = find_leftovers(MADE)
    stop_leftovers()
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "the test session left these behind:\n" + found.report()
        if reporter is not None:
            reporter.write_sep("=", "leaks", red=True)
            reporter.write_line(message)
        clean(MADE, found)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() != 0 and not config.getoption("markexpr"):
        raise pytest.UsageError("tuxio's tests run LXC containers and must run as root")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (tests/postgres.py)."""
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty ledger database of each kind: a SQLite file, a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.sqlite3"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"ledger_{uuid.uuid4().hex[:12]}")
