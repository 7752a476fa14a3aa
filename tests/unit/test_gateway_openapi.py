"""The gateway's OpenAPI documents (gateway/openapi.py) name exactly the routes its two apps
serve, with the methods they serve; the committed copies in docs/ are current. What the
gateway answers on them is held to the documents by the fuzz suite
(tests/e2e/test_gateway_fuzz.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web

from tests.gatewaykit import CA, FakeKube
from tests.unit.test_gateway_api import settings_for
from tuxio.gateway.api import create_api_app
from tuxio.gateway.openapi import api_document, visitor_document
from tuxio.gateway.runtime import Gateway
from tuxio.gateway.visitor import create_visitor_app

DOCS = Path(__file__).resolve().parents[2] / "docs"
# A route of every method ("*"): the visitor's files route, whose handler serves these and
# answers 405 to the rest.
ANY_METHOD = {"GET", "PUT", "DELETE", "OPTIONS"}


def _routes(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        # aiohttp answers HEAD on every GET route as the GET, without the body.
        if route.method == "HEAD":
            continue
        methods = ANY_METHOD if route.method == "*" else {route.method}
        found |= {(method, path) for method in methods}
    return found


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "options", "patch", "head"}
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    return Gateway(settings_for(tmp_path, CA("cluster")), FakeKube())  # type: ignore[arg-type]


def test_the_aggregated_api_document_names_its_routes(gateway: Gateway) -> None:
    assert _documented(api_document()) == _routes(create_api_app(gateway))


def test_the_visitor_document_names_its_routes(gateway: Gateway) -> None:
    assert _documented(visitor_document()) == _routes(create_visitor_app(gateway))


@pytest.mark.parametrize(
    ("name", "document"),
    [
        ("gateway-api-openapi.json", api_document),
        ("gateway-visitor-openapi.json", visitor_document),
    ],
)
def test_committed_documents_are_current_and_valid(name: str, document: Any) -> None:
    assert json.loads((DOCS / name).read_text()) == document(), (
        f"docs/{name} is stale: run 'make openapi'"
    )
    loaded = schemathesis.openapi.from_dict(document())
    assert all(result.ok() for result in loaded.get_all_operations())
