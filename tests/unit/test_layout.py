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
