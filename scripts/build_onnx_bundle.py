#!/usr/bin/env python3
"""Prepare the folder the ONNX flavour serves: graph (the repository's when it matches, else exported, ALiBi
capped), fidelity gate, graph optimisation, int8 only if it passes, tokenizer.json as transformers loads it.

    python scripts/build_onnx_bundle.py --model-dir DIR --out-dir OUT [--max-length N] [--no-int8]

The runtime-onnx image's model stage runs it; serve OUT with RERANK_FLAVOUR=onnx RERANK_MODEL_PATH=OUT.
Needs torch, transformers and `onnx` (requirements/onnx-export.txt). The logic lives in service/onnx_bundle.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.model_download import resolve_project_path  # noqa: E402
from service.model_store import ModelNotAvailableError  # noqa: E402
from service.settings import SettingsError, load_settings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=resolve_project_path, required=True, help="local model folder")
    parser.add_argument("--out-dir", type=resolve_project_path, required=True, help="the folder to write")
    parser.add_argument("--max-length", type=int, default=settings.rerank_max_length,
                        help="tokens per pair the graph accepts (default: RERANK_MAX_LENGTH, %(default)s)")
    parser.add_argument("--no-int8", action="store_true", help="do not try dynamic int8")
    parser.add_argument("--no-optimise", action="store_true", help="keep the graph as exported")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("service").setLevel(logging.INFO)

    from service.onnx_bundle import FIDELITY_FILE, BundleError, build_bundle

    try:
        report = build_bundle(args.model_dir, args.out_dir, max_length=args.max_length,
                              quantize=not args.no_int8, optimise=not args.no_optimise)
    except (BundleError, ModelNotAvailableError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Wrote {report.out_dir} in {report.seconds:.1f} s: graph {report.graph_source} ({report.why}), "
          f"optimised: {report.optimised}")
    for name, scored in report.options.items():
        print(f"  {name}: {'passed' if scored.passed else 'not passed'} {json.dumps(scored.entry)}")
    print(f"Verdict: {report.out_dir / FIDELITY_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
