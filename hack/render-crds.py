#!/usr/bin/env python3
"""Write crds/*.yaml from the API types in operator/models.py (`make crds`).

The same files go to manifests/base/crds/ too: kustomize does not load files from above a
kustomization's directory, so the crds base carries its own copy (a test checks it is fresh).
"""

from pathlib import Path

from tuxio.operator.crdgen import render_all

root = Path(__file__).resolve().parents[1]
for target in (root / "crds", root / "manifests" / "base" / "crds"):
    target.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (target / name).write_text(text)
        print(target / name)
