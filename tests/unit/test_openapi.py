"""The agent's OpenAPI schema is generated from its models; the committed copy must be current."""

from __future__ import annotations

import json
from pathlib import Path

from tuxio.nodeagent.api import openapi_document

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "agent-openapi.json"


def test_committed_schema_is_current() -> None:
    assert json.loads(COMMITTED.read_text()) == openapi_document(), (
        "docs/agent-openapi.json is stale: run 'make openapi'"
    )


def test_every_field_is_described() -> None:
    schemas = openapi_document()["components"]["schemas"]
    missing = [
        f"{schema}.{field}"
        for schema, body in schemas.items()
        if not schema.startswith(("HTTPValidationError", "ValidationError"))
        for field, prop in body.get("properties", {}).items()
        if "description" not in prop and "$ref" not in prop and "allOf" not in prop
    ]
    assert missing == []


def test_error_answers_are_documented() -> None:
    put = openapi_document()["paths"]["/v1/containers/{name}"]["put"]
    for code in ("401", "404", "409", "422", "500"):
        assert put["responses"][code]["content"]["application/json"]["schema"]["$ref"].endswith(
            "ErrorBody"
        )
