"""Contenders that run from their own venv under benchmarks/.work/ (Infinity; this service as its image installs
it): the logged pip steps both use."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import IO

INSTALL_TIMEOUT_S = 1800  # one pip step: torch's wheel and a resolver run on a slow mirror


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def run_logged(cmd: list[str], log: IO[bytes]) -> int:
    """Run one install step with its output appended to `log`; its exit status."""
    log.write(f"\n$ {' '.join(cmd)}\n".encode())
    log.flush()
    return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False,
                          timeout=INSTALL_TIMEOUT_S).returncode


def install(steps: list[list[str]], log_file: Path) -> str | None:
    """Run the steps in order, logged to `log_file`; None when all succeed, else what failed and the log's end."""
    with log_file.open("wb") as log:
        for cmd in steps:
            if run_logged(cmd, log) != 0:
                return f"`{' '.join(cmd[-3:])}` failed (log: {log_file}):\n{log_tail(log_file)}"
    return None


def log_tail(path: Path, lines: int = 30) -> str:
    """The end of an install log, without pip's noise about find-links folders that do not exist here."""
    text = path.read_text(errors="replace").splitlines()
    interesting = [line for line in text if "is ignored: it is neither a file nor a directory" not in line]
    return "\n".join(interesting[-lines:])
