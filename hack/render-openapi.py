#!/usr/bin/env python3
"""Write the OpenAPI documents to docs/: the agent's (generated from its models) and the
gateway's two listeners' (gateway/openapi.py)."""

import json
from pathlib import Path

from tuxio.gateway.openapi import api_document, visitor_document
from tuxio.nodeagent.api import openapi_document

docs = Path(__file__).resolve().parents[1] / "docs"
for name, document in (
    ("agent-openapi.json", openapi_document()),
    ("gateway-api-openapi.json", api_document()),
    ("gateway-visitor-openapi.json", visitor_document()),
):
    target = docs / name
    target.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    print(target)
