#!/usr/bin/env python3
"""Smoke-test a deployed reranker: scripts/smoke_test.py URL [--api-key KEY] [--expect-ranking].

Exit 0 when healthy and ranking well-formed results; 1 with a one-line reason. Logic: infra/smoke.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.smoke import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
