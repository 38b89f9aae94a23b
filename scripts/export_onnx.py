#!/usr/bin/env python3
"""Export a local reranker model folder to ONNX for RERANK_BACKEND=onnx (and, with --quantize, int8).

    python scripts/export_onnx.py [--model-path DIR] [--output-dir DIR/onnx] [--quantize] [--max-length N]

Writes <output-dir>/model.onnx (fp32) and, with --quantize, <output-dir>/model_quantized.onnx (dynamic int8,
for RERANK_PRECISION=int8): the names and place jinaai/jina-reranker-v1-tiny-en ships them under, so the
service finds them in the model folder. For a Hub model, first make a local folder with
scripts/download_reranker_local.py. Needs the `onnx` package (requirements/dev.txt); the service itself
only needs onnxruntime. The logic lives in service/backends/onnx_export.py.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--model-path", type=resolve_project_path, default=settings.model_path,
                        required=settings.model_path is None,
                        help="local model folder; relative to the project root (default: RERANK_MODEL_PATH)")
    parser.add_argument("--output-dir", type=resolve_project_path,
                        help="where to write the ONNX files (default: <model-path>/onnx)")
    parser.add_argument("--quantize", action="store_true",
                        help="also write model_quantized.onnx (dynamic int8 weights)")
    parser.add_argument("--max-length", type=int, default=settings.rerank_max_length,
                        help="longest pair in tokens the graph accepts (ALiBi models; "
                             "default: RERANK_MAX_LENGTH, %(default)s)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--eager-attention", action="store_true",
                        help="export JinaBERT-style attention as loaded (eager) instead of its SDPA path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("service").setLevel(logging.INFO)

    from service.backends.onnx_export import FP32_FILE, INT8_FILE, ONNX_DIR, export_onnx, quantize_int8

    output_dir = args.output_dir or args.model_path / ONNX_DIR
    try:
        fp32 = export_onnx(args.model_path, output_dir / FP32_FILE, opset=args.opset,
                           max_length=args.max_length, sdpa=not args.eager_attention)
        print(f"Wrote {fp32} (RERANK_BACKEND=onnx)")
        if args.quantize:
            int8 = quantize_int8(fp32, output_dir / INT8_FILE)
            print(f"Wrote {int8} (RERANK_BACKEND=onnx RERANK_PRECISION=int8)")
    except (ModelNotAvailableError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if output_dir != args.model_path / ONNX_DIR:
        print(f"note: the service looks for the files in {args.model_path / ONNX_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
