#!/usr/bin/env python3
"""Save the reranker as a plain, self-contained directory and print the RERANK_MODEL_PATH line for `.env`.

    python scripts/download_reranker_local.py [--output-dir DIR] [--model ID_OR_DIR] [--revision REV]

The directory holds the weights, tokenizer, config and remote-code .py files (auto_map rewritten to them),
so it loads with no Hugging Face cache and no network: run this where the Hub is reachable, copy the directory
to the air-gapped machine (or into a Docker build context, MODEL_DIR) and set RERANK_MODEL_PATH. A local
directory is accepted instead of an id. The logic lives in service/model_download.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.model_download import (  # noqa: E402
    ModelNotAvailableError,
    add_model_arguments,
    load_download_settings,
    prepare_model,
    print_verdict,
    resolve_project_path,
)
from service.hub import report_to_stderr  # noqa: E402
from service.settings import SettingsError  # noqa: E402

DEFAULT_OUTPUT_DIR = "models/jina-reranker-v1-tiny-en"


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_download_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output-dir",
        type=resolve_project_path,
        default=resolve_project_path(DEFAULT_OUTPUT_DIR),
        help=f"where to save it; relative to the project root (default: {DEFAULT_OUTPUT_DIR})",
    )
    add_model_arguments(parser, settings)
    parser.add_argument(
        "--no-fidelity-gate",
        action="store_true",
        help="skip the checks on the weights: the precision gate (no fidelity.json: RERANK_PRECISION=auto "
        "then runs fp32) and the native implementation's (no native.json: the remote code serves)",
    )
    args = parser.parse_args(argv)
    report_to_stderr()  # what the Hub is waited for, and for how long

    try:
        prepared = prepare_model(
            args.model,
            revision=args.revision,
            local_dir=args.output_dir,
            max_length=settings.rerank_max_length,
            timeouts=settings.hub_timeouts,
            fidelity_gate=not args.no_fidelity_gate,
        )
    except ModelNotAvailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    print(
        f"Saved {args.model} to {prepared.source.path}; it loads with the Hub offline "
        f"({prepared.verification.model_class})."
    )
    print_verdict(prepared)
    print("Put this line in .env:")
    for line in prepared.env_lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
