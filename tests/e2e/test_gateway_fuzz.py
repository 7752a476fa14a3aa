"""Schemathesis against a real gateway replica (tests/fuzzing.py), a few cases per operation of
its two documents (docs/gateway-api-openapi.json, docs/gateway-visitor-openapi.json), with a
real Sandbox on a real agent behind it:

- the aggregated API, reached as kube-apiserver reaches it: the front proxy's client
  certificate and an editor's identity in X-Remote-User; and without them (no certificate, or
  the certificate with no user named; made-up users and bearers), which must be 401;
- the visitor endpoint with a visitor token of every scope, and without one (401); the Origin
  is a listed one throughout (an unlisted one is refused with 403 before any token is read).

No 5xx, every answer as the document says, refused WebSocket upgrades a JSON 4xx. `make fuzz`
runs the same with at least 1000 cases per operation (bench/fuzz.py)."""

from __future__ import annotations

from collections.abc import Iterator

import kubernetes
import pytest

from tests.e2e.conftest import CLUSTER_DIR, RUN_DIR, Cluster, Host, Operator
from tests.e2e.test_deploy import Person
from tests.e2e.test_gateway import (
    API_NAME,
    ORIGIN,
    VISITOR_NAME,
    Gateway,
    agent_over_tls,
    mint,
    running_gateway,
    running_sandbox,
)
from tests.fuzzing import (
    SHORT_CASES,
    OperationReport,
    Target,
    front_proxy_forgery,
    fuzz_gateway,
    summary,
    write_report,
)
from tuxio.gateway.openapi import api_document, visitor_document

FRONT_PROXY = (
    str(CLUSTER_DIR / "pki" / "front-proxy-client.crt"),
    str(CLUSTER_DIR / "pki" / "front-proxy-client.key"),
)


@pytest.fixture(scope="module")
def fuzzed_gateway(cluster: Cluster, core: kubernetes.client.CoreV1Api) -> Iterator[Gateway]:
    with running_gateway(cluster, core, names=("gw-fuzz",)) as found:
        yield found


@pytest.fixture(scope="module")
def fuzzed_host(
    cluster: Cluster, custom: kubernetes.client.CustomObjectsApi, operator: Operator
) -> Iterator[Host]:
    with agent_over_tls(cluster, custom, name="gateway-fuzz") as registered:
        yield registered


def api_target(gw: Gateway, editor: Person) -> Target:
    replica = gw.replicas[0]
    return Target(
        f"https://{replica.address}:{replica.api_port}",
        {"X-Remote-User": editor.identity, "X-Remote-Group": "system:serviceaccounts"},
        verify=str(RUN_DIR / "gateway-tls" / "ca.crt"),
        cert=FRONT_PROXY,
        server_hostname=API_NAME,
        forge=front_proxy_forgery(FRONT_PROXY),
    )


def visitor_target(gw: Gateway, token: str) -> Target:
    replica = gw.replicas[0]
    return Target(
        f"https://127.0.0.1:{replica.visitor_port}",
        {"Authorization": f"Bearer {token}"},
        verify=str(RUN_DIR / "gateway-tls" / "ca.crt"),
        extra_headers={"Origin": ORIGIN},
        server_hostname=VISITOR_NAME,
    )


def _operations(document: dict) -> set[str]:
    methods = {"get", "put", "post", "delete", "options"}
    return {
        f"{m.upper()} {p}" for p, item in document["paths"].items() for m in item if m in methods
    }


def test_fuzz_the_gateway(
    cluster: Cluster,
    core: kubernetes.client.CoreV1Api,
    custom: kubernetes.client.CustomObjectsApi,
    operator: Operator,
    fuzzed_host: Host,
    fuzzed_gateway: Gateway,
    namespace: str,
) -> None:
    running_sandbox(cluster, custom, namespace, "fuzzed")
    editor = Person(cluster, core, namespace, "edit")
    code, minted = mint(editor, namespace, "fuzzed", ["terminal", "exec", "files"])
    assert code == 0, minted
    sandbox = (namespace, "fuzzed")
    reports: list[OperationReport] = []
    for listener, document, target in (
        ("aggregated API", api_document(), api_target(fuzzed_gateway, editor)),
        ("visitor endpoint", visitor_document(),
         visitor_target(fuzzed_gateway, minted["status"]["token"])),
    ):  # fmt: skip
        for authenticated in (True, False):
            found = fuzz_gateway(target, document, sandbox, cases=SHORT_CASES,
                                 authenticated=authenticated)  # fmt: skip
            write_report(f"gateway {listener} {'with' if authenticated else 'without'} "
                         "credentials", found)  # fmt: skip
            assert {r.operation for r in found} == _operations(document)
            reports += found
    assert all(r.cases > 0 for r in reports), [r.as_json() for r in reports]
    assert summary(reports) == ""
