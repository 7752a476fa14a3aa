"""tuxio-web's pure rules: the visitor's address, the session cookie, the rate limit, the line
beyond the cap, and the cap from the hosts."""

from __future__ import annotations

import ipaddress

import pytest

from tuxio.web.admission import Admission, Admit, Full, Queued
from tuxio.web.capacity import host_room, site_cap
from tuxio.web.clientip import client_address
from tuxio.web.cookies import SessionSigner
from tuxio.web.ratelimit import RateLimiter

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.7", None, "203.0.113.7"),  # no proxy
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),  # an untrusted peer's header is ignored
        ("10.1.2.3", "198.51.100.1", "198.51.100.1"),  # a trusted proxy vouches
        ("10.1.2.3", "198.51.100.9, 198.51.100.1, 10.4.4.4", "198.51.100.1"),  # rightmost untrusted
        ("10.1.2.3", "10.9.9.9, 10.4.4.4", "10.9.9.9"),  # only proxies: the leftmost
        ("10.1.2.3", "garbage, 10.4.4.4", "10.4.4.4"),  # a malformed hop: nothing left of it
        ("127.0.0.1", " 2001:db8::1 ", "2001:db8::1"),
        ("10.1.2.3", "", "10.1.2.3"),
        (None, "198.51.100.1", "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded: str | None, expected: str) -> None:
    assert client_address(peer, forwarded, PROXIES) == expected


def test_session_cookie_signed_and_checked() -> None:
    signer = SessionSigner(b"k" * 32)
    session, value = signer.new()
    assert len(session) == 32 and signer.verify(value) == session
    other = SessionSigner(b"o" * 32)
    assert other.verify(value) is None  # another key
    forged = f"{'0' * 32}.{value.split('.')[1]}"
    assert signer.verify(forged) is None
    for bad in (None, "", "abc", "a.b.c", f"{session}."):
        assert signer.verify(bad) is None
    with pytest.raises(ValueError, match="32 bytes"):
        SessionSigner(b"short")


def test_rate_limit_bursts_then_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=6, burst=2, clock=lambda: now[0])
    for _ in range(2):
        assert limiter.retry_after("a") == 0
        limiter.take("a")
    assert limiter.retry_after("a") == pytest.approx(10.0)  # 6/min: one every 10 s
    assert limiter.retry_after("b") == 0  # per address
    now[0] = 5.0
    assert limiter.retry_after("a") == pytest.approx(5.0)
    now[0] = 10.0
    assert limiter.retry_after("a") == 0
    limiter.take("a")
    limiter.give_back("a")  # its sandbox could not be made
    assert limiter.retry_after("a") == 0


def test_rate_limit_forgets_refilled_addresses_when_full() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=1, clock=lambda: now[0], max_keys=2)
    limiter.take("a")
    limiter.take("b")
    now[0] = 100.0
    limiter.take("c")  # a and b have refilled: forgotten, not grown without bound
    assert len(limiter._buckets) == 1


def test_the_line_moves_in_order_and_drops_abandoned_tickets() -> None:
    now = [0.0]
    line = Admission(queue_length=2, ticket_seconds=10, clock=lambda: now[0])
    line.cap = 1
    assert line.decide("a", active=0) == Admit()
    assert line.decide("b", active=1) == Queued(1, 2.0)
    assert line.decide("c", active=1) == Queued(2, 2.0)
    assert isinstance(line.decide("d", active=1), Full)  # the line is full too
    assert line.decide("c", active=0) == Queued(2, 2.0)  # room for one: b's, not c's
    assert line.decide("b", active=0) == Admit()
    assert line.decide("c", active=1) == Queued(1, 2.0)
    now[0] = 11.0  # c stopped asking (its tab closed)
    assert line.waiting == 0
    assert line.decide("e", active=0) == Admit()  # nobody waits: straight in


@pytest.mark.parametrize(
    ("host", "room"),
    [
        (
            {
                "status": {
                    "capacity": {"memoryBytes": 1024},
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
            },
            4,
        ),
        (
            {
                "spec": {"maxSandboxes": 2},
                "status": {
                    "capacity": {"memoryBytes": 1024},
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            },
            2,
        ),
        (
            {
                "spec": {"unschedulable": True},
                "status": {
                    "capacity": {"memoryBytes": 1024},
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            },
            0,
        ),
        (
            {
                "status": {
                    "capacity": {"memoryBytes": 1024},
                    "conditions": [{"type": "Ready", "status": "False"}],
                }
            },
            0,
        ),
        ({"status": {}}, 0),
    ],
)
def test_host_room(host: dict, room: int) -> None:
    assert host_room(host, 256) == room


def test_site_cap_sums_hosts_within_the_ceiling() -> None:
    ready = {
        "status": {
            "capacity": {"memoryBytes": 1024},
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    }
    assert site_cap([ready, ready], 256, ceiling=100) == 8
    assert site_cap([ready, ready], 256, ceiling=5) == 5
    assert site_cap([], 256, ceiling=5) == 0
