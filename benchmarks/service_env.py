"""This service's own venv for the benchmark and the host soak: requirements/service.txt and nothing else,
as the image installs it, under benchmarks/.work/service-venv.

The project's .venv also holds the development tools, sentence-transformers among them (the seed-style server
and the tests use it), and with it scikit-learn and SciPy. transformers imports scikit-learn whenever it is
installed, so a service started from .venv carries 85 MiB per worker that no image has: its memory would be
measured wrong. The venv is rebuilt when requirements/service.txt or torch.txt change (their hash is stamped
in it), and checked: the service's packages import, scikit-learn, SciPy and sentence-transformers do not.

    python -m benchmarks.service_env          # create or check it; prints the status as JSON
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.servers import SERVICE_VENV, WORK_DIR
from benchmarks.venvs import install, venv_python
from service.settings import PROJECT_ROOT

REQUIREMENTS = PROJECT_ROOT / "requirements" / "service.txt"
PINNED_FILES = (REQUIREMENTS, PROJECT_ROOT / "requirements" / "torch.txt")
STAMP = "requirements.sha256"
LOG_FILE = WORK_DIR / "service-venv-install.log"
MUST_IMPORT = ("torch", "transformers", "tokenizers", "fastapi", "uvicorn", "pydantic_settings", "jwt")
MUST_NOT_BE_INSTALLED = ("sklearn", "scipy", "sentence_transformers")
CHECK = f"""
import importlib, importlib.util, json
for name in {MUST_IMPORT!r}:
    importlib.import_module(name)
print(json.dumps({{"present": [n for n in {MUST_NOT_BE_INSTALLED!r} if importlib.util.find_spec(n)],
                  "torch": importlib.import_module("torch").__version__}}))
"""


@dataclass
class ServiceEnvStatus:
    ok: bool
    venv: str
    detail: str
    seconds: float = 0.0

    @property
    def python(self) -> str:
        return str(venv_python(Path(self.venv)))


def requirements_hash() -> str:
    digest = hashlib.sha256()
    for path in PINNED_FILES:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def is_current(venv: Path = SERVICE_VENV) -> bool:
    stamp = venv / STAMP
    return venv_python(venv).exists() and stamp.is_file() and stamp.read_text().strip() == requirements_hash()


def ensure(venv: Path = SERVICE_VENV, python: str = sys.executable) -> ServiceEnvStatus:
    """Create (or rebuild) the venv if it does not match the requirements; check it; return what happened."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if is_current(venv):
        return check(ServiceEnvStatus(True, str(venv), "up to date"))
    shutil.rmtree(venv, ignore_errors=True)
    failure = install([[python, "-m", "venv", str(venv)],
                       [str(venv_python(venv)), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)]], LOG_FILE)
    if failure:
        return ServiceEnvStatus(False, str(venv), failure, time.perf_counter() - start)
    (venv / STAMP).write_text(requirements_hash() + "\n")
    return check(ServiceEnvStatus(True, str(venv), "installed", time.perf_counter() - start))


def check(status: ServiceEnvStatus) -> ServiceEnvStatus:
    """Import the service's packages under the venv's python and make sure the dev-only ones are absent."""
    result = subprocess.run([status.python, "-c", CHECK], capture_output=True, text=True, check=False,
                            timeout=300)
    if result.returncode != 0:
        status.ok, status.detail = False, f"the service's packages do not import:\n{result.stderr[-2000:]}"
        return status
    found = json.loads(result.stdout.strip().splitlines()[-1])
    if found["present"]:
        status.ok = False
        status.detail = (f"{', '.join(found['present'])} installed in {status.venv}: requirements/service.txt "
                         "pulls in what no image has; the service's memory would be measured wrong")
    else:
        status.detail += f" (torch {found['torch']}; no {', '.join(MUST_NOT_BE_INSTALLED)})"
    return status


def add_argument(parser) -> None:
    """The --service-python option of the benchmark and the soak."""
    parser.add_argument("--service-python", default="venv", metavar="venv|current|PATH",
                        help="the interpreter that runs this service: `venv` (default) builds and uses "
                             "benchmarks/.work/service-venv (requirements/service.txt only, as in the image); "
                             "`current` is this interpreter (the dev venv: scikit-learn and SciPy importable, "
                             "+85 MiB per worker); or a python's path")


def resolve(choice: str, log=print) -> str:
    """The interpreter --service-python names; exits with the reason when the venv cannot be built."""
    if choice == "current":
        return sys.executable
    if choice != "venv":
        if not Path(choice).is_file():
            raise SystemExit(f"--service-python {choice}: no such interpreter")
        return choice
    log(f"checking this service's venv ({SERVICE_VENV.relative_to(PROJECT_ROOT)})...")
    status = ensure()
    if not status.ok:
        raise SystemExit(f"this service's venv is not usable: {status.detail}\n"
                         "(--service-python current measures it from this interpreter instead)")
    log(f"service venv: {status.detail}")
    return status.python


if __name__ == "__main__":
    result = ensure()
    print(json.dumps({**asdict(result), "python": result.python}, indent=2))
    sys.exit(0 if result.ok else 1)
