#!/usr/bin/env python3
"""Write the agent's OpenAPI schema, generated from its models, to docs/agent-openapi.json."""

import json
from pathlib import Path

from tuxio.nodeagent.api import openapi_document

target = Path(__file__).resolve().parents[1] / "docs" / "agent-openapi.json"
target.write_text(json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n")
print(target)
