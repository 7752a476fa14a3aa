"""Placement across hosts, nearest to the visitor, with real GeoLite2 data.

Three agents run on this machine, each a host of its own: its own network namespace with a
veth pair and address (made here with ip(8)), its own LXC path, its own location. They are
registered as SandboxHosts in Amsterdam, Ashburn and Tokyo; visitors' addresses are placed by
the operator with the GeoLite2 City database that hack/fetch-geolite2.sh fetches.
"""

from __future__ import annotations

import base64
import json
import signal
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import kubernetes
import pytest

from tests.e2e.conftest import (
    GROUP,
    SYSTEM_NS,
    VERSION,
    Cluster,
    Host,
    Operator,
    get_sandbox,
    host_ready,
    register_host,
    sandbox,
    wait_phase,
)
from tests.e2e.test_pool import get_pool, pool, wait_ready_replicas, warm_containers
from tests.gatewaykit import CA
from tests.support import (
    Agent,
    Netns,
    destroy_everything,
    free_port,
    make_netns,
    prepare_data_dir,
    wait_until,
)

Custom = kubernetes.client.CustomObjectsApi

GEO_LABEL = {"tux.io/e2e-geo": "true"}
SELECTOR = {"placement": {"hostSelector": GEO_LABEL}}

# name, region, latitude, longitude
SITES = [
    ("geo-eu", "eu-west", 52.37, 4.89),  # Amsterdam
    ("geo-us", "us-east", 39.04, -77.49),  # Ashburn
    ("geo-ap", "ap-northeast", 35.68, 139.69),  # Tokyo
]
# Addresses GeoLite2 places (see tests/unit/test_placement.py): where they are, who is nearest.
LONDON, PRINCETON, TOKYO, MELBOURNE = "81.2.69.142", "128.112.136.1", "203.178.141.194", "1.1.1.1"


@dataclass
class NetnsHost:
    """An agent in a network namespace of its own."""

    netns: Netns
    host: Host


@pytest.fixture(scope="module")
def sites(cluster: Cluster, operator: Operator, custom: Custom) -> Iterator[dict[str, NetnsHost]]:
    made: dict[str, NetnsHost] = {}
    namespaces: list[Netns] = []
    # The sites' agents are not on the loopback, so they serve TLS, as a real host's agent does
    # (the operator refuses http:// there): a certificate for the namespace's address.
    ca = CA("placement-agents")
    ca_b64 = base64.b64encode(ca.pem.encode()).decode()
    try:
        for index, (name, region, lat, lon) in enumerate(SITES, start=1):
            netns = make_netns(index, name)
            namespaces.append(netns)
            data_dir = prepare_data_dir(name)
            cert, key = ca.issue(name, server=True, names=(netns.address,)).write(data_dir, "tls")
            agent = Agent(
                data_dir,
                free_port(),
                (data_dir / "token").read_text().strip(),
                ["--reserved-cpus", "0", "--tls-cert", str(cert), "--tls-key", str(key)],
                scheme="https",
                verify=ssl.create_default_context(cadata=ca.pem),
                address=netns.address,
                wrapper=netns.wrapper,
            )
            made[name] = NetnsHost(netns, Host(name, agent))  # torn down whatever happens next
            agent.start()
            made[name] = NetnsHost(
                netns,
                register_host(
                    cluster,
                    name,
                    agent,
                    labels=GEO_LABEL,
                    location={"region": region, "latitude": lat, "longitude": lon},
                ),
            )
            cluster.kubectl("patch", "secret", f"{name}-agent", "-n", SYSTEM_NS, "--type=merge",
                            "-p", json.dumps({"data": {"ca.crt": ca_b64}}))  # fmt: skip
            cluster.kubectl("patch", "sandboxhost", name, "--type=merge",
                            "-p", '{"spec":{"credentialsSecretRef":{"caKey":"ca.crt"}}}')  # fmt: skip
        for name in made:
            wait_until(lambda n=name: host_ready(custom, n), timeout=60)
        yield made
    finally:
        for name, site in made.items():
            cluster.kubectl("delete", "sandboxhost", name, "--ignore-not-found", "--timeout=60s")
            site.host.agent.stop()
            destroy_everything(site.host.agent)
        for netns in namespaces:
            netns.remove()


def visitor(name: str, client_ip: str, **extra: Any) -> dict[str, Any]:
    return sandbox(
        name,
        template="busybox",
        placement={"clientIP": client_ip, "hostSelector": GEO_LABEL},
        **extra,
    )


def test_each_visitor_lands_on_the_nearest_host(
    cluster: Cluster, custom: Custom, sites: dict[str, NetnsHost], namespace: str
) -> None:
    expected = {
        "london": (LONDON, "geo-eu", "GB", 300, 450),
        "princeton": (PRINCETON, "geo-us", "US", 250, 400),
        "tokyo": (TOKYO, "geo-ap", "JP", 0, 50),
        "melbourne": (MELBOURNE, "geo-ap", "AU", 7500, 8500),
    }
    for name, (address, *_) in expected.items():
        cluster.apply(visitor(name, address), "-n", namespace)
    for name, (_, host, country, low, high) in expected.items():
        body = wait_phase(custom, namespace, name, "Running")
        placement = body["status"]["placement"]
        assert body["status"]["host"] == host, (name, body["status"])
        assert placement["reason"] == "Nearest"
        assert low <= placement["distanceKm"] <= high, (name, placement)
        assert placement["clientLocation"].endswith(country)
        # The container really is on that host's agent, in its own LXC path.
        agent = sites[host].host.agent
        assert (agent.lxcpath / body["status"]["containerName"]).is_dir()


def test_private_or_unknown_address_falls_back_to_region_then_load(
    cluster: Cluster, custom: Custom, sites: dict[str, NetnsHost], namespace: str
) -> None:
    cluster.apply(visitor("lan", "192.168.1.20"), "-n", namespace)
    cluster.apply(
        sandbox(
            "lan-in-region",
            template="busybox",
            placement={"clientIP": "10.0.0.1", "region": "us-east", "hostSelector": GEO_LABEL},
        ),
        "-n",
        namespace,
    )
    cluster.apply(visitor("unknown", "102.0.0.1"), "-n", namespace)
    lan = wait_phase(custom, namespace, "lan", "Running")["status"]
    assert lan["placement"]["reason"] == "Load"
    assert "private or reserved" in lan["placement"]["message"]
    assert lan["host"] in sites
    regional = wait_phase(custom, namespace, "lan-in-region", "Running")["status"]
    assert (regional["host"], regional["placement"]["reason"]) == ("geo-us", "Region")
    unknown = wait_phase(custom, namespace, "unknown", "Running")["status"]
    assert unknown["placement"]["reason"] == "Load"
    assert "not in the GeoIP database" in unknown["placement"]["message"]


def test_full_host_loses_to_the_next_nearest(
    cluster: Cluster, custom: Custom, sites: dict[str, NetnsHost], namespace: str
) -> None:
    cluster.apply(visitor("first", LONDON), "-n", namespace)
    assert wait_phase(custom, namespace, "first", "Running")["status"]["host"] == "geo-eu"
    placed_on_eu = custom.get_cluster_custom_object(GROUP, VERSION, "sandboxhosts", "geo-eu")
    count = (placed_on_eu.get("status") or {}).get("allocation", {}).get("sandboxes", 1)
    cluster.kubectl(
        "patch", "sandboxhost", "geo-eu", "--type=merge", "-p",
        f'{{"spec":{{"maxSandboxes":{max(1, count)}}}}}',
    )  # fmt: skip
    try:
        cluster.apply(visitor("second", LONDON), "-n", namespace)
        second = wait_phase(custom, namespace, "second", "Running")["status"]
        # London: Amsterdam is full; Ashburn (5 900 km) is nearer than Tokyo (9 600 km).
        assert second["host"] == "geo-us"
        assert second["placement"]["reason"] == "Nearest"
        assert 5500 < second["placement"]["distanceKm"] < 6300
    finally:
        cluster.kubectl(
            "patch", "sandboxhost", "geo-eu", "--type=merge", "-p",
            '{"spec":{"maxSandboxes":null}}',
        )  # fmt: skip


def _warm_by_host(sites: dict[str, NetnsHost], pool_uid: str) -> dict[str, int]:
    return {
        name: len([c for c in warm_containers(site.host, pool_uid) if c["state"] == "running"])
        for name, site in sites.items()
        if site.host.agent.proc is not None
    }


def test_pool_spreads_over_regions_and_claims_nearest_then_survives_a_host(
    cluster: Cluster, custom: Custom, sites: dict[str, NetnsHost], namespace: str
) -> None:
    cluster.apply(pool("world", 3, placement={"hostSelector": GEO_LABEL}), "-n", namespace)
    body = wait_ready_replicas(custom, namespace, "world", 3, timeout=90)
    uid = body["metadata"]["uid"]
    assert _warm_by_host(sites, uid) == {"geo-eu": 1, "geo-us": 1, "geo-ap": 1}

    # A visitor in Tokyo adopts the warm container in Tokyo.
    cluster.apply(
        sandbox("claimer", poolRef={"name": "world"}, placement={"clientIP": TOKYO}),
        "-n",
        namespace,
    )
    claimed = wait_phase(custom, namespace, "claimer", "Running")["status"]
    assert (claimed["host"], claimed["fromPool"]) == ("geo-ap", "world")
    assert claimed["placement"]["reason"] == "Nearest"
    assert claimed["containerName"].startswith("pool-")
    # ... and the pool re-warms Tokyo: one per region again.
    wait_until(lambda: _warm_by_host(sites, uid) == {"geo-eu": 1, "geo-us": 1, "geo-ap": 1})

    # Amsterdam's agent dies: the host turns NotReady and receives nothing new ...
    sites["geo-eu"].host.agent.stop(signal.SIGKILL)
    wait_until(
        lambda: (
            custom.get_cluster_custom_object(GROUP, VERSION, "sandboxhosts", "geo-eu")
            .get("status", {})
            .get("conditions")
            and not host_ready(custom, "geo-eu")
        ),
        timeout=30,
    )
    cluster.apply(visitor("after-failure", LONDON), "-n", namespace)
    after = wait_phase(custom, namespace, "after-failure", "Running")["status"]
    assert after["host"] == "geo-us"  # the nearest survivor

    # ... and the pool has three ready warm containers again, all on the survivors.
    def rewarmed() -> bool:
        on = _warm_by_host(sites, uid)
        ready = (get_pool(custom, namespace, "world").get("status") or {}).get("readyReplicas")
        return ready == 3 and sum(on.values()) == 3 and set(on) == {"geo-us", "geo-ap"}

    wait_until(rewarmed, timeout=60)
    warm = _warm_by_host(sites, uid)
    assert warm["geo-us"] >= 1 and warm["geo-ap"] >= 1
    assert get_sandbox(custom, namespace, "claimer")["status"]["phase"] == "Running"
