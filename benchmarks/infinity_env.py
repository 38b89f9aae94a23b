"""Infinity (contender b) in its own venv under benchmarks/.work/, never in the project's .venv.

torch==2.13.0 is installed first (pip takes the local CPU wheel from its find-links when there is one),
then `infinity-emb[torch,server,einops]` under benchmarks/infinity-constraints.txt, which keeps torch at
2.13.0 and transformers at 4.57.6 (5.x breaks JinaBERT-style remote code).

    python -m benchmarks.infinity_env          # create or check it; prints the status as JSON
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.servers import BENCH_DIR, INFINITY_VENV, WORK_DIR
from benchmarks.venvs import install, venv_python

INFINITY_VERSION = "0.0.78"
INFINITY_REQUIREMENT = f"infinity-emb[torch,server,einops]=={INFINITY_VERSION}"
CONSTRAINTS = BENCH_DIR / "infinity-constraints.txt"
STATUS_FILE = WORK_DIR / "infinity-status.json"
LOG_FILE = WORK_DIR / "infinity-install.log"


@dataclass
class InfinityStatus:
    ok: bool
    venv: str
    requirement: str
    detail: str
    seconds: float = 0.0


def is_installed(venv: Path = INFINITY_VENV) -> bool:
    return (venv / "bin" / "infinity_emb").exists() and venv_python(venv).exists()


def ensure(venv: Path = INFINITY_VENV, python: str = sys.executable) -> InfinityStatus:
    """Create the venv and install Infinity if it is not there; return (and record) what happened."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    if is_installed(venv):
        status = InfinityStatus(True, str(venv), INFINITY_REQUIREMENT, "already installed")
        return _record(status, verify=True)
    start = time.perf_counter()
    failure = install([
        [python, "-m", "venv", str(venv)],
        [str(venv_python(venv)), "-m", "pip", "install", "-q", "torch==2.13.0"],
        [str(venv_python(venv)), "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS), INFINITY_REQUIREMENT],
    ], LOG_FILE)
    if failure:
        return _record(InfinityStatus(False, str(venv), INFINITY_REQUIREMENT, failure, time.perf_counter() - start))
    status = InfinityStatus(True, str(venv), INFINITY_REQUIREMENT, "installed", time.perf_counter() - start)
    return _record(status, verify=True)


def _record(status: InfinityStatus, verify: bool = False) -> InfinityStatus:
    if verify:
        code = "import infinity_emb, torch, transformers; print(torch.__version__, transformers.__version__)"
        res = subprocess.run([str(venv_python(Path(status.venv))), "-c", code], capture_output=True, text=True,
                             check=False, timeout=300)
        if res.returncode != 0:
            status.ok = False
            status.detail = f"installed but `import infinity_emb` fails:\n{res.stderr[-2000:]}"
        else:
            status.detail += f" (torch {res.stdout.split()[0]}, transformers {res.stdout.split()[1]})"
    STATUS_FILE.write_text(json.dumps(asdict(status), indent=2))
    return status


if __name__ == "__main__":
    print(json.dumps(asdict(ensure()), indent=2))
