"""manifests/: the crds base carries fresh copies of the generated CRDs, and lists them all."""

from __future__ import annotations

from pathlib import Path

import yaml

from tuxio.operator.crdgen import render_all

ROOT = Path(__file__).resolve().parents[2]
BASE_CRDS = ROOT / "manifests" / "base" / "crds"


def test_crd_copies_are_current() -> None:
    for name, text in render_all().items():
        assert (BASE_CRDS / name).read_text() == text, (
            f"manifests/base/crds/{name} is stale: run 'make crds'"
        )


def test_crds_kustomization_lists_every_crd() -> None:
    kustomization = yaml.safe_load((BASE_CRDS / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(render_all())
    assert sorted(p.name for p in BASE_CRDS.glob("*.yaml") if p.name != "kustomization.yaml") == (
        sorted(render_all())
    )
