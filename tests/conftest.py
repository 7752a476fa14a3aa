"""Shared test set-up: every tier runs as root on a real host; nothing is skipped silently."""

from __future__ import annotations

import os

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop any agent or operator a failed test left running (fixtures stop the rest)."""
    from tests.support import stop_leftovers

    stop_leftovers()


def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() != 0 and not config.getoption("markexpr"):
        raise pytest.UsageError("tuxio's tests run LXC containers and must run as root")
