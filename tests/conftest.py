"""Shared test set-up: every tier runs as root on a real host; nothing is skipped silently,
and nothing the session made is left behind (tests/leaks.py)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _worker_cluster() -> int | None:
    """Under pytest-xdist (`make test` runs the suite on several workers), each worker gets a
    control plane of its own: its own TUXIO_CLUSTER_DIR and ports (hack/lib/cluster-env.sh),
    so that no two workers share an API server, its CRDs or the run directory of the tests
    beside it. Set before any test module (tests/e2e/conftest.py reads them at import) and
    inherited by hack/cluster-up.sh. Worker gwN takes `<TUXIO_CLUSTER_DIR>-gwN` and each base
    port plus 10*N: the bases are the variables' values when set (two sessions side by side
    choose two sets), else 2500, 2501, 6500 and 9500, below 10000, where `free_port` never
    looks. Returns the worker's number, or None outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return None
    n = int(worker[2:])
    base = os.environ.get("TUXIO_CLUSTER_DIR", "/var/tmp/tuxio-cluster").rstrip("/")
    ports = {
        "TUXIO_ETCD_CLIENT_PORT": 2500,
        "TUXIO_ETCD_PEER_PORT": 2501,
        "TUXIO_APISERVER_PORT": 6500,
        "TUXIO_KCM_PORT": 9500,
    }
    os.environ["TUXIO_CLUSTER_DIR"] = f"{base}-{worker}"
    for name, default in ports.items():
        os.environ[name] = str(int(os.environ.get(name, default)) + 10 * n)
    return n


WORKER = _worker_cluster()

from tests.postgres import PostgresServer, start_postgres  # noqa: E402


def _cluster_down() -> subprocess.CompletedProcess[str]:
    """hack/cluster-down.sh for this process's TUXIO_CLUSTER_DIR: stop it and remove it."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [str(root / "hack" / "cluster-down.sh")], capture_output=True, text=True, check=False
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    """A worker's control plane is made for its session and removed at its end; one still
    there was left by a session that was killed (its API objects, the aggregated API's
    registration among them, would meet this session's: found when a run followed a killed
    one, and every gateway test of one worker got 503). It is stopped and removed first."""
    if WORKER is None:
        return
    if Path(os.environ["TUXIO_CLUSTER_DIR"]).exists():
        down = _cluster_down()
        if down.returncode != 0:
            raise pytest.UsageError(
                f"a leftover control plane could not be removed:\n{down.stderr}"
            )


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
    if WORKER is not None:
        # A worker's control plane is its own and goes with it (the default one is kept
        # running between runs, for a developer's next `pytest tests/e2e`).
        _cluster_down()


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
