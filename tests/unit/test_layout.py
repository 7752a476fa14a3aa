"""The distribution's shape: import names, and no shadowing of the standard library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_operator_folder_does_not_shadow_the_standard_library() -> None:
    # Run from the repository root, where a regular package operator/ would win.
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import operator, sys; print(operator.__file__); print(operator.itemgetter)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert not found[0].startswith(str(ROOT))
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_import_names_map_to_the_folders() -> None:
    import tuxio.nodeagent
    import tuxio.operator.agentclient

    assert Path(tuxio.nodeagent.__file__).parent == ROOT / "nodeagent"
    assert Path(tuxio.operator.agentclient.__file__).parent == ROOT / "operator"


def test_console_script_installed() -> None:
    agent = Path(sys.executable).with_name("tuxio-agent")
    out = subprocess.run([str(agent), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == __import__("tuxio.nodeagent").nodeagent.__version__


def test_every_package_folder_is_in_the_distribution() -> None:
    """A folder with an __init__.py under a package's folder that pyproject.toml's `packages`
    does not list is left out of the wheel the images install (pip installs the distribution,
    not the tree): the image then fails at its first import of it."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = set()
    for name, folder in setuptools["package-dir"].items():
        found.add(name)
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            if relative.parts and "node_modules" not in relative.parts:
                found.add(".".join((name, *relative.parts)))
    assert found == listed


def test_every_package_folder_is_in_the_image_build_context() -> None:
    """The Dockerfiles copy every folder of package-dir; .dockerignore must let each in."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    allowed = {
        line.strip().removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert set(setuptools["package-dir"].values()) <= allowed
