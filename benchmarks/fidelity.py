"""Fidelity of a precision/backend option: its scores vs fp32 torch on a fixed set of >= 500 pairs.

The bar (issue 5): Spearman >= 0.999 and max |score difference| <= 0.01, or the option is not offered
as a default. The reference is what the guide's server computes: `CrossEncoder.predict` in fp32 with
the model's own (eager) attention; the ALiBi buffer is capped to `max_length`, which slices the same
values, so scores are unchanged.

Library use (the service's tests may reuse the pairs and the comparison):

    from benchmarks.fidelity import compare, fidelity_pairs, reference_scores
    ref = reference_scores(model_path, pairs)
    report = compare(ref, my_scores)        # report.ok, report.spearman, report.max_abs_diff

CLI: score options in-process, an ONNX file, or a running server over HTTP (loopback):

    python -m benchmarks.fidelity --model-path DIR --option sdpa --option bf16 --option bf16-sdpa \
        [--onnx-file DIR/onnx/model.onnx] [--url http://127.0.0.1:8000] [--json out.json] [--strict]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.workloads import fidelity_pairs
from service import fidelity_gate as _gate

__all__ = [
    "MAX_ABS_DIFF",
    "MIN_SPEARMAN",
    "Fidelity",
    "compare",
    "fidelity_pairs",
    "load_cross_encoder",
    "reference_scores",
    "score_http",
    "score_onnx",
    "score_option",
    "spearman",
    "use_sdpa",
]

MIN_SPEARMAN = _gate.THRESHOLDS["spearman"]
MAX_ABS_DIFF = _gate.THRESHOLDS["max_abs_diff"]

OPTIONS = ("fp32", "sdpa", "bf16", "bf16-sdpa", "bf16-weights", "bf16-weights-sdpa")


# One definition of the rank correlation for the benchmark and the precision gate.
spearman = _gate.spearman


@dataclass
class Fidelity:
    option: str
    n: int
    spearman: float
    max_abs_diff: float
    mean_abs_diff: float
    ok: bool

    def line(self) -> str:
        verdict = "PASS" if self.ok else "FAIL"
        return (f"{self.option:<22} n={self.n:<4} spearman={self.spearman:.6f} max|d|={self.max_abs_diff:.2e} "
                f"mean|d|={self.mean_abs_diff:.2e}  {verdict}")


def compare(reference: Sequence[float], candidate: Sequence[float], option: str = "candidate",
            min_spearman: float = MIN_SPEARMAN, max_abs_diff: float = MAX_ABS_DIFF) -> Fidelity:
    ref = [float(x) for x in reference]
    cand = [float(x) for x in candidate]
    if len(ref) != len(cand):
        raise ValueError(f"{len(ref)} reference scores but {len(cand)} candidate scores")
    diffs = [abs(x - y) for x, y in zip(ref, cand)]
    rho = spearman(ref, cand)
    worst = max(diffs) if diffs else 0.0
    ok = (not math.isnan(rho)) and rho >= min_spearman and worst <= max_abs_diff
    return Fidelity(option, len(ref), rho, worst, sum(diffs) / max(len(diffs), 1), ok)


# ----------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------


def load_cross_encoder(model_path: Path | str, max_length: int = 512, cap_alibi: bool = True):
    """`CrossEncoder(model, trust_remote_code=True)` with the tokens-per-pair cap; for ALiBi configs the
    bias buffer is capped to `max_length` (identical values, a fraction of the memory)."""
    from sentence_transformers import CrossEncoder

    config = json.loads((Path(model_path) / "config.json").read_text())
    overrides = None
    if cap_alibi and config.get("position_embedding_type") == "alibi" and \
            int(config.get("max_position_embeddings") or 0) > max_length:
        overrides = {"max_position_embeddings": max_length}
    model = CrossEncoder(str(model_path), trust_remote_code=True, max_length=max_length, device="cpu",
                         config_kwargs=overrides)
    model.eval()
    return model


_SWITCHES: dict[int, Any] = {}


def use_sdpa(model: Any, implementation: str | None = "torch") -> int:
    """Switch JinaBERT-style attention (either code form) to PyTorch SDPA, as the service does
    (service.backends.attention.switch_to_sdpa), or back with `implementation=None`; returns how many
    modules were switched (0 if the model has no such switch)."""
    from service.backends.attention import switch_to_sdpa

    root = getattr(model, "model", model)
    if implementation is None:
        switch = _SWITCHES.pop(id(root), None)
        if switch is None:
            return 0
        count = switch.modules
        switch.undo()
        return count
    switch = switch_to_sdpa(root)
    _SWITCHES[id(root)] = switch
    return switch.modules


def snapshot_tensors(module: Any) -> dict[str, Any]:
    """Copies of every parameter and buffer, non-persistent ones included (JinaBERT's ALiBi bias)."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return {name: tensor.detach().clone() for name, tensor in tensors}


def restore_tensors(module: Any, saved: dict[str, Any]) -> None:
    """Undo a dtype round trip (bf16 -> fp32 loses the low bits): put the exact copies back."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        tensor.data = saved[name]


def _pairs_list(pairs: Sequence[tuple[str, str]]) -> list[list[str]]:
    return [[q, d] for q, d in pairs]


def reference_scores(model_path: Path | str, pairs: Sequence[tuple[str, str]], max_length: int = 512,
                     batch_size: int = 32) -> list[float]:
    """fp32 torch, the model's own attention path, `CrossEncoder.predict` (sigmoid for one logit)."""
    return score_option(load_cross_encoder(model_path, max_length), pairs, "fp32", batch_size)


def score_option(model: Any, pairs: Sequence[tuple[str, str]], option: str, batch_size: int = 32) -> list[float]:
    """Score with an in-process torch option (see OPTIONS). Leaves the model as it found it."""
    import torch

    if option not in OPTIONS:
        raise ValueError(f"unknown option {option!r}; choose from {OPTIONS}")
    sdpa = option.endswith("sdpa")
    weights_bf16 = option.startswith("bf16-weights")
    autocast = option.startswith("bf16") and not weights_bf16
    if sdpa and use_sdpa(model) == 0:
        raise ValueError("the model has no attn_implementation attribute to switch to SDPA")
    saved = None
    try:
        if weights_bf16:
            # bf16 -> fp32 does not give the fp32 weights back: keep them to restore afterwards.
            saved = snapshot_tensors(model.model)
            model.model.to(torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            scores = model.predict(_pairs_list(pairs), batch_size=batch_size, show_progress_bar=False,
                                   convert_to_numpy=True)
    finally:
        if sdpa:
            use_sdpa(model, None)
        if saved is not None:
            restore_tensors(model.model, saved)
    return [float(s) for s in scores]


def score_onnx(onnx_file: Path | str, tokenizer_dir: Path | str, pairs: Sequence[tuple[str, str]],
               max_length: int = 512, batch_size: int = 32, threads: int | None = None) -> list[float]:
    """Score with ONNX Runtime (CPU): tokenizer from `tokenizer_dir`, sigmoid of the single logit."""
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    input_names = {i.name for i in session.get_inputs()}
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    scores: list[float] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        enc = tokenizer([q for q, _ in chunk], [d for _, d in chunk], padding=True, truncation=True,
                        max_length=max_length, return_tensors="np")
        feeds = {k: v.astype(np.int64) for k, v in enc.items() if k in input_names}
        logits = session.run(None, feeds)[0].reshape(len(chunk), -1)[:, 0].astype(np.float64)
        scores.extend((1.0 / (1.0 + np.exp(-logits))).tolist())
    return scores


def score_http(url: str, pairs: Sequence[tuple[str, str]], route: str = "/v1/rerank",
               timeout_s: float = 300.0) -> list[float]:
    """Score through a running server (loopback only): one request per run of pairs sharing a query."""
    import httpx

    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise ValueError("score_http only talks to loopback servers")
    scores: list[float] = []
    i = 0
    with httpx.Client(timeout=timeout_s) as client:
        while i < len(pairs):
            query = pairs[i][0]
            j = i
            while j < len(pairs) and pairs[j][0] == query:
                j += 1
            docs = [d for _, d in pairs[i:j]]
            response = client.post(url.rstrip("/") + route,
                                   json={"query": query, "documents": docs, "return_documents": False})
            response.raise_for_status()
            by_index = {int(r["index"]): float(r["relevance_score"]) for r in response.json()["results"]}
            scores.extend(by_index[k] for k in range(len(docs)))
            i = j
    return scores


def run(model_path: Path, options: Sequence[str], onnx_files: Sequence[Path] = (), urls: Sequence[str] = (),
        n_pairs: int = 512, max_length: int = 512, batch_size: int = 32,
        progress: Callable[[str], None] = print) -> list[Fidelity]:
    pairs = fidelity_pairs(n_pairs)
    model = load_cross_encoder(model_path, max_length)
    reference = score_option(model, pairs, "fp32", batch_size)
    results = []
    for option in options:
        results.append(compare(reference, score_option(model, pairs, option, batch_size), option))
        progress(results[-1].line())
    for onnx_file in onnx_files:
        results.append(compare(reference, score_onnx(onnx_file, model_path, pairs, max_length, batch_size),
                               f"onnx:{Path(onnx_file).name}"))
        progress(results[-1].line())
    for url in urls:
        results.append(compare(reference, score_http(url, pairs), f"http:{url}"))
        progress(results[-1].line())
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scores of an option vs fp32 torch on a fixed pair set.")
    parser.add_argument("--model-path", type=Path, required=True)
    parser.add_argument("--option", action="append", default=[], choices=OPTIONS,
                        help="in-process torch option (repeatable)")
    parser.add_argument("--onnx-file", action="append", type=Path, default=[], help="an ONNX export to score")
    parser.add_argument("--url", action="append", default=[],
                        help="a running server on loopback to score over HTTP (POST /v1/rerank)")
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any option fails the bar")
    args = parser.parse_args(argv)
    if args.pairs < 500:
        print("note: the fidelity bar is defined on >= 500 pairs", file=sys.stderr)
    results = run(args.model_path, args.option, args.onnx_file, args.url, args.pairs, args.max_length)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 1 if args.strict and not all(r.ok for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
