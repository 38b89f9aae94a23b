"""Pulumi entry point (Pulumi.yaml `main: infra/`): everything lives in infra.program."""

import sys
from pathlib import Path

_INFRA = Path(__file__).resolve().parent
# Pulumi runs this directory as a script: make `import infra` resolve to this package, not its files.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _INFRA]
sys.path.insert(0, str(_INFRA.parent))

from infra.program import run  # noqa: E402

run()
