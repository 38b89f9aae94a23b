"""gate.json for RESULTS.md: the precision gate's verdict (not written to the models) on the trained test model
and on the random JinaBERT-shaped proxy, side by side, with the CPU they were taken on (the speed column, and
which options are worth offering, depend on it).

    python -m benchmarks.gate_report [--json benchmarks/gate.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    from benchmarks.machine import cpu_label
    from benchmarks.servers import BENCH_DIR, PROJECT_ROOT, WORK_DIR
    from service.fidelity_gate import run_gate
    from tests.support.model_factory import JINA_TINY_DIMS, cached_model

    parser = argparse.ArgumentParser(prog="python -m benchmarks.gate_report")
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "gate.json")
    args = parser.parse_args(argv)
    models = {
        "trained MiniLM reranker (tests/support/trained_reranker.py)":
            cached_model("trained", PROJECT_ROOT / ".cache" / "test-models"),
        "random JinaBERT-shaped proxy": cached_model("alibi", WORK_DIR / "models", **JINA_TINY_DIMS),
    }
    verdicts = {label: run_gate(path, options=["torch-bf16"], write=False).to_json()
                for label, path in models.items()}
    out = {"cpu": cpu_label(), "verdicts": verdicts}
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
