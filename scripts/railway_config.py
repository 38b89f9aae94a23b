#!/usr/bin/env python3
"""Regenerate railway.json from a railway stack (`--check`: fail if it is stale; `--variables`: the
`railway variables` commands). Logic: infra/railway_config.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.railway_config import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
