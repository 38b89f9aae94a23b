"""Helpers of the download-script tests: run a script as a user would, in a clean environment, against a
Hugging Face cache laid out on disk (a "fake Hub cache") or a Hub endpoint that refuses connections."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.network import black_hole, closed_port  # noqa: F401 - the tests import them from here

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def script_env(hf_home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any Hugging Face or reranker setting, plus HF_HOME and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "RERANK_"))}
    return {**env, "HF_HOME": str(hf_home), **extra}


def run_script(
    name: str, *args: str, env: dict[str, str], cwd: Path = PROJECT_ROOT, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / name), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_line(stderr: str) -> str:
    """The script's one `error: ...` line (progress lines about the Hub come before it, on stderr too)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, f"expected one error line in:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    return lines[0]


def printed_model_path(stdout: str) -> Path:
    """The directory that the printed `RERANK_MODEL_PATH=...` line makes the service load."""
    from service.settings import load_settings

    lines = [line.strip() for line in stdout.splitlines() if line.strip().startswith("RERANK_MODEL_PATH=")]
    assert len(lines) == 1, f"expected one RERANK_MODEL_PATH= line in:\n{stdout}"
    return load_settings(RERANK_MODEL_PATH=lines[0].split("=", 1)[1]).model_path
