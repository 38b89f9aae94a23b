#!/usr/bin/env python3
"""Download everything the reranker needs to load offline, then prove it loads with the Hub offline.

    python scripts/download_models.py [--model ID_OR_DIR] [--revision REV] [--local-dir DIR]

Without --local-dir (or RERANK_LOCAL_DIR) a model id goes into the Hugging Face cache (HF_HOME): weights,
tokenizer, config, its remote-code .py files, and the second repository that the config's auto_map names
(jinaai/jina-bert-implementation for the default model). With it, the model is saved as a plain directory
there, remote code included (point RERANK_MODEL_PATH at it). A local directory is accepted instead of an id.
Defaults come from the service settings (RERANK_MODEL, RERANK_MODEL_REVISION). Exits 1 with a message saying
what failed and what to try. The logic lives in service/model_download.py.
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
from service.model_store import hf_cache_dir  # noqa: E402
from service.hub import report_to_stderr  # noqa: E402
from service.settings import SettingsError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_download_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, settings)
    parser.add_argument(
        "--local-dir",
        type=resolve_project_path,
        default=settings.local_dir,
        help="save a plain model directory here instead of the Hugging Face cache "
        "(default: RERANK_LOCAL_DIR)",
    )
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
            local_dir=args.local_dir,
            max_length=settings.rerank_max_length,
            timeouts=settings.hub_timeouts,
            fidelity_gate=not args.no_fidelity_gate,
        )
    except ModelNotAvailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    loaded = (
        f"loads with the Hub offline ({prepared.verification.model_class}, "
        f"max_length {prepared.verification.max_length})"
    )
    if prepared.source.path is None:
        print(f"{args.model} is in the Hugging Face cache ({hf_cache_dir()}) and {loaded}.")
    elif args.local_dir is not None:
        print(f"Saved {args.model} to {prepared.source.path}; it {loaded}.")
    else:
        print(f"{prepared.source.path} {loaded}.")
    if prepared.code_repos:
        print("Remote code from: " + ", ".join(prepared.code_repos))
    print_verdict(prepared)
    print("Settings for the service:")
    for line in prepared.env_lines():
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
