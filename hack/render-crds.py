#!/usr/bin/env python3
"""Write crds/*.yaml from the API types in operator/models.py (`make crds`)."""

from pathlib import Path

from tuxio.operator.crdgen import render_all

target = Path(__file__).resolve().parents[1] / "crds"
target.mkdir(exist_ok=True)
for name, text in render_all().items():
    (target / name).write_text(text)
    print(target / name)
