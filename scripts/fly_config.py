#!/usr/bin/env python3
"""Regenerate fly.toml from a fly stack (`--check`: fail if it is stale; `--variables`: the
`fly secrets set` and `fly scale count` commands). Logic: infra/fly_config.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.fly_config import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
