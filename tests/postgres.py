"""A real PostgreSQL server for the tests: Debian's package, started and stopped by them.

initdb into a fresh directory, owned by the unprivileged `postgres` account (PostgreSQL will
not run as root), pg_ctl on a free port, its socket in that directory; trust authentication
for its own loopback only. Stopped, and its directory removed, when the session ends.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support import MADE, free_port

__all__ = ["PostgresServer", "start_postgres"]

BIN = Path("/usr/lib/postgresql")
USER = "postgres"


def _bindir() -> Path:
    versions = sorted((p for p in BIN.glob("*/bin") if (p / "initdb").exists()), reverse=True)
    assert versions, "PostgreSQL is not installed (hack/install-deps.sh installs `postgresql`)"
    return versions[0]


def _as_postgres(*argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["runuser", "-u", USER, "--", *argv], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{argv[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done


@dataclass
class PostgresServer:
    root: Path
    port: int
    bindir: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        _as_postgres(
            str(self.bindir / "createdb"), "-h", str(self.root), "-p", str(self.port), name
        )
        return self.url(name)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _as_postgres(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
            )
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="tuxio-pg-"))
    MADE.roots.append(root)
    shutil.chown(root, USER, USER)
    server = PostgresServer(root, free_port(), bindir)
    _as_postgres(
        str(bindir / "initdb"), "-D", str(server.data), "-U", USER, "--auth=trust", "-E", "UTF8"
    )
    options = f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    _as_postgres(
        str(bindir / "pg_ctl"),
        "-D",
        str(server.data),
        "-l",
        str(root / "log"),
        "-o",
        options,
        "-w",
        "-t",
        "120",
        "start",
    )
    return server
