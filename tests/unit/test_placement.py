"""Placement near the visitor: distances, GeoIP lookups in a real GeoLite2 City database
(MaxMind's data, fetched by hack/fetch-geolite2.sh), and the scorer and pool spreading as tables."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tuxio.operator.geo import GeoPoint, Locator, Unlocated, haversine_km
from tuxio.operator.pool_policy import spread_request
from tuxio.operator.scheduling import (
    Allocation,
    Decision,
    HostView,
    Request,
    Unschedulable,
    choose_host,
    placement_scorer,
    rank_hosts,
)
from tuxio.operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
GiB = 2**30

AMSTERDAM = GeoPoint(52.37, 4.89, "Amsterdam")
ASHBURN = GeoPoint(39.04, -77.49, "Ashburn")
TOKYO = GeoPoint(35.68, 139.69, "Tokyo")
LONDON = GeoPoint(51.51, -0.13, "London, GB")
NEW_YORK = GeoPoint(40.71, -74.01, "New York, US")
OSAKA = GeoPoint(34.69, 135.50, "Osaka, JP")
SYDNEY = GeoPoint(-33.87, 151.21, "Sydney, AU")


def host(name: str, where: GeoPoint | None, region: str | None, **kw: object) -> HostView:
    return HostView(
        name=name,
        ready=True,
        unschedulable=False,
        templates=frozenset({"busybox"}),
        shared_cpus=8,
        memory_bytes=16 * GiB,
        region=region,
        location=where,
        **kw,  # type: ignore[arg-type]
    )


EU = host("eu", AMSTERDAM, "eu-west")
US = host("us", ASHBURN, "us-east")
AP = host("ap", TOKYO, "ap-northeast")
HOSTS = [EU, US, AP]
REQUEST = Request(template="busybox", cpus=1, memory_bytes=GiB)
SCORE = placement_scorer(OperatorSettings().distance_weight)


@pytest.mark.parametrize(
    ("a", "b", "km"),
    [
        (LONDON, AMSTERDAM, 358),
        (NEW_YORK, ASHBURN, 350),
        (TOKYO, OSAKA, 397),
        (LONDON, TOKYO, 9558),
        (AMSTERDAM, AMSTERDAM, 0),
        (GeoPoint(0, 0), GeoPoint(0, 180), 20015),  # half way round the equator
    ],
)
def test_haversine(a: GeoPoint, b: GeoPoint, km: float) -> None:
    assert haversine_km(a, b) == pytest.approx(km, rel=0.01, abs=1)
    assert haversine_km(a, b) == pytest.approx(haversine_km(b, a))


@pytest.mark.parametrize(
    ("client", "used", "winner", "why"),
    [
        # Each visitor gets the host nearest to them when all are equally free.
        (LONDON, {}, "eu", "nearest"),
        (NEW_YORK, {}, "us", "nearest"),
        (OSAKA, {}, "ap", "nearest"),
        (SYDNEY, {}, "ap", "nearest"),
        # Half full still wins by nearness ...
        (LONDON, {"eu": Allocation(8, 8 * GiB, 8)}, "eu", "near and half full"),
        # ... nearly full loses to a free host farther away ...
        (LONDON, {"eu": Allocation(15, 15 * GiB, 15)}, "us", "near but nearly full"),
        # ... and full (no room left: overcommit 1.0 here) is no candidate at all.
        (LONDON, {"eu": Allocation(16, 16 * GiB, 16)}, "us", "near but full"),
        (NEW_YORK, {"us": Allocation(16, 16 * GiB, 16)}, "eu", "us full: next nearest"),
    ],
)
def test_nearest_host_with_room(
    client: GeoPoint, used: dict[str, Allocation], winner: str, why: str
) -> None:
    decision = choose_host(
        HOSTS, used, replace(REQUEST, client=client), scorer=SCORE, memory_overcommit=1.0
    )
    assert isinstance(decision, Decision), why
    assert decision.host == winner, why
    assert decision.kind == "Nearest"
    assert decision.distance_km == pytest.approx(
        haversine_km(client, {"eu": AMSTERDAM, "us": ASHBURN, "ap": TOKYO}[winner]), abs=0.1
    )
    assert decision.reason.startswith(f"nearest with room: {decision.distance_km:.0f} km")
    assert client.label in decision.reason


def test_no_client_location_is_load_alone() -> None:
    used = {"eu": Allocation(4, 4 * GiB, 4), "us": Allocation(2, 2 * GiB, 2)}
    decision = choose_host(HOSTS, used, REQUEST, scorer=SCORE)
    assert isinstance(decision, Decision)
    assert (decision.host, decision.kind, decision.distance_km) == ("ap", "Load", None)
    assert SCORE(EU, Allocation(), REQUEST) == pytest.approx(
        SCORE(EU, Allocation(), replace(REQUEST, client=None))
    )


def test_region_then_load() -> None:
    second_eu = host("eu2", None, "eu-west")
    used = {"eu": Allocation(4, 4 * GiB, 4)}
    request = replace(REQUEST, regions=frozenset({"eu-west"}))
    decision = choose_host([*HOSTS, second_eu], used, request, scorer=SCORE)
    assert isinstance(decision, Decision)
    assert (decision.host, decision.kind) == ("eu2", "Region")
    assert "least loaded in region eu-west" in decision.reason


def test_region_constrains_even_a_nearer_host() -> None:
    request = replace(REQUEST, client=LONDON, regions=frozenset({"us-east"}))
    decision = choose_host(HOSTS, {}, request, scorer=SCORE)
    assert isinstance(decision, Decision) and decision.host == "us"
    assert decision.kind == "Nearest"  # within the region, distance still explains it


def test_host_without_location_counts_as_farthest() -> None:
    nowhere = host("nowhere", None, None)
    decision = choose_host([nowhere, US], {}, replace(REQUEST, client=LONDON), scorer=SCORE)
    assert isinstance(decision, Decision) and decision.host == "us"


def test_unschedulable_and_not_ready_get_nothing_however_near() -> None:
    hosts = [replace(EU, unschedulable=True), replace(US, ready=False), AP]
    decision = choose_host(hosts, {}, replace(REQUEST, client=LONDON), scorer=SCORE)
    assert isinstance(decision, Decision) and decision.host == "ap"
    none_left = choose_host(hosts[:2], {}, replace(REQUEST, client=LONDON), scorer=SCORE)
    assert isinstance(none_left, Unschedulable)
    assert none_left.reasons == {"unschedulable": 1, "not Ready": 1}


def test_claims_rank_warm_hosts_by_nearness() -> None:
    ranked = rank_hosts(HOSTS, {}, replace(REQUEST, client=OSAKA), scorer=SCORE)
    assert ranked == ["ap", "eu", "us"]  # Osaka: Tokyo, Amsterdam (9 300 km), Ashburn (11 000)
    assert rank_hosts(HOSTS, {}, replace(REQUEST, client=LONDON), scorer=SCORE)[0] == "eu"


@pytest.mark.parametrize(
    ("per_region", "hosts", "regions"),
    [
        ({}, HOSTS, {"ap-northeast"}),  # all empty: ties by name
        ({"ap-northeast": 2, "eu-west": 1, "us-east": 1}, HOSTS, {"eu-west"}),
        ({"ap-northeast": 1, "eu-west": 1, "us-east": 0}, HOSTS, {"us-east"}),
        ({}, [EU], set()),  # one region: nothing to spread over
        ({}, [EU, host("plain", None, None)], set()),  # a host without a region: by load
        ({"eu-west": 0}, [EU, replace(US, ready=False)], set()),  # only eu fits
    ],
)
def test_pool_spread_over_regions(
    per_region: dict[str | None, int], hosts: list[HostView], regions: set[str]
) -> None:
    narrowed = spread_request(REQUEST, hosts, {}, per_region, memory_overcommit=2.0)
    assert narrowed.regions == frozenset(regions)


def test_pool_spread_respects_pinned_regions() -> None:
    pinned = replace(REQUEST, regions=frozenset({"eu-west", "us-east"}))
    narrowed = spread_request(pinned, HOSTS, {}, {"eu-west": 3, "us-east": 1}, 2.0)
    assert narrowed.regions == frozenset({"us-east"})


# ----- GeoIP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def geolite2() -> Path:
    fetched = subprocess.run(
        [str(ROOT / "hack" / "fetch-geolite2.sh")], capture_output=True, text=True, check=False
    )
    assert fetched.returncode == 0, f"hack/fetch-geolite2.sh failed:\n{fetched.stderr}"
    return Path(fetched.stdout.strip())


@pytest.mark.parametrize(
    ("address", "country", "near", "within_km"),
    [
        ("81.2.69.142", "GB", LONDON, 50),
        ("193.0.6.139", "NL", AMSTERDAM, 20),  # RIPE NCC
        ("2001:67c:2e8::1", "NL", AMSTERDAM, 20),  # RIPE NCC over IPv6
        ("203.178.141.194", "JP", TOKYO, 50),  # WIDE project
        ("128.112.136.1", "US", NEW_YORK, 100),  # Princeton
        ("1.1.1.1", "AU", SYDNEY, 1000),
    ],
)
def test_locator_places_real_addresses(
    geolite2: Path, address: str, country: str, near: GeoPoint, within_km: float
) -> None:
    found = Locator(geolite2).locate(address)
    assert isinstance(found, GeoPoint), found
    assert found.label.endswith(country)
    assert haversine_km(found, near) < within_km


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("10.1.2.3", "private or reserved"),
        ("192.168.0.7", "private or reserved"),
        ("127.0.0.1", "private or reserved"),
        ("fd00::1", "private or reserved"),
        ("192.0.2.10", "private or reserved"),  # documentation range
        ("102.0.0.1", "not in the GeoIP database"),
        ("not-an-ip", "is not an IP address"),
    ],
)
def test_locator_falls_back_without_error(geolite2: Path, address: str, why: str) -> None:
    found = Locator(geolite2).locate(address)
    assert isinstance(found, Unlocated) and why in found.reason


def test_no_database_places_nothing() -> None:
    found = Locator(None).locate("81.2.69.142")
    assert found == Unlocated("the operator has no GeoIP database")


def test_missing_database_file_is_a_clear_startup_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Locator(tmp_path / "absent.mmdb")


def test_scorer_without_a_client_is_exactly_the_load_score() -> None:
    """placement_scorer inlines load_score's formula for speed: the two must not drift apart."""
    import random

    from tuxio.operator.scheduling import load_score

    rng = random.Random(3)
    for _ in range(500):
        view = replace(
            EU,
            shared_cpus=rng.randrange(0, 64),
            memory_bytes=rng.randrange(1, 512) * GiB,
            load=rng.uniform(0, 40),
        )
        used = Allocation(rng.randrange(100), rng.randrange(0, 600) * GiB, rng.randrange(100))
        request = replace(
            REQUEST, cpus=rng.randrange(1, 8), memory_bytes=rng.randrange(1, 64) * GiB
        )
        assert SCORE(view, used, request) == pytest.approx(
            load_score(view, used, request), abs=1e-6
        )
