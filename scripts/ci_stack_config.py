#!/usr/bin/env python3
"""Copy CI variables into a stack's Pulumi config (secrets via stdin, --secret). Logic: infra/ci.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.ci import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
