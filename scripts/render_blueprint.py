#!/usr/bin/env python3
"""Regenerate render.yaml from Pulumi.prod.yaml (`--check`: fail if it is stale).

Logic: infra/blueprint.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.blueprint import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
