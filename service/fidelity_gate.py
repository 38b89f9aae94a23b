"""The per-model precision gate: which reduced-precision options keep this model's scores, measured on its
own weights, and the verdict file `fidelity.json` that `auto` reads at start-up.

Where it runs: wherever the real weights are, i.e. after `scripts/download_models.py` /
`scripts/download_reranker_local.py` (and so in the image build's model stage) have proven the model loads
offline (`service.model_download.prepare_model`); `python -m service.fidelity_gate MODEL_DIR` runs it alone.

What it does: scores the fixed calibration set (`service.calibration.calibration_set()`: 512 realistic
query/passage pairs, 32 queries x 16 passages of RAG-chunk lengths) through the service's own scoring path
(`RerankEngine`: tokenization, length-sorted token-budget batches, the backend) in the reference option
`torch-fp32` and in every reduced option on offer (`torch-bf16`; `onnx-fp32` / `onnx-int8` when the model
folder has `onnx/model.onnx` / `onnx/model_quantized.onnx`), and compares each with the reference:

* Spearman rank correlation over all pairs            >= 0.999
* mean over queries of |top-10 ∩ reference top-10| / 10 >= 0.98
* max |score difference| (sigmoid scores, as served)    <= 0.01

It also times each option on the same pairs (after a warm-up), batched and padded as that option serves
(`service.engine.factory.serving_batching`), so `auto` can prefer the fastest that passed. One timing, with the
reference always first, is not enough: measured in an image build on an AMD EPYC (2 CPUs, BuildKit running other
stages alongside), the reference took 41.0 s and onnx-fp32 31.6 s (1.30x), where the same two options on the same
machine, alone, took 32.6 / 31.2 s and then 35.7 / 35.4 s (1.03-1.05x), and served the same speed (W1 1.00x, W2
0.97x of torch: benchmarks/flavours.py). So when a reduced option passes, the reference and every option that
passed are timed again in the reverse order (`TIMING_PASSES`), and each option's `seconds` is its best pass
(`timings` lists them all): a slow spell then costs no option its rank, whatever its place in the order.

The verdict, `fidelity.json` at the model directory's root (format version 1)::

    {
      "format": 1,
      "created": "2026-12-01T08:30:00Z",
      "model": {"directory": "...", "weights": [{"file": "model.safetensors", "bytes": 1234, "sha256": "..."}],
                "max_length": 512},
      "versions": {"torch": "...", "transformers": "...", "onnxruntime": "...", "service": "2.0.0", ...},
      "cpu": {"model": "...", "avx512_bf16": true, "amx_bf16": false, "avx512_vnni": true, "threads": 2},
      "thresholds": {"spearman": 0.999, "top10_overlap": 0.98, "max_abs_diff": 0.01},
      "calibration": {"generator": "service.calibration.calibration_set", "pairs": 512, "queries": 32,
                      "passages_per_query": 16, "seed": ..., "sha256": "...", "passage_words": {...}},
      "reference": "torch-fp32",
      "options": {
        "torch-fp32": {"passed": true, "spearman": 1.0, "top10_overlap": 1.0, "max_abs_diff": 0.0,
                       "mean_abs_diff": 0.0, "seconds": 9.1, "timings": [9.4, 9.1], "speedup_vs_reference": 1.0, ...},
        "torch-bf16": {"passed": true, "spearman": 0.99991, "top10_overlap": 0.996, "max_abs_diff": 0.0021,
                       "mean_abs_diff": 0.0003, "seconds": 4.4, "timings": [4.4, 4.5], "speedup_vs_reference": 2.07,
                       "mode": "weights", "failed": []},
        "onnx-int8": {"passed": false, ..., "failed": ["spearman", "max_abs_diff"]},
        "onnx-fp32": {"passed": false, "error": "..."}          # could not be scored: never picked
      }
    }

Reading side (`read_verdict`, `choose_option`, `cpu_features`) needs only the standard library: the ONNX
image (no torch) uses it as is. Running the gate (`run_gate`) needs torch and the model.

Public API::

    THRESHOLDS, VERDICT_FILE, REFERENCE_OPTION, OPTION_NAMES
    read_verdict(model_dir) -> Verdict | None          # raises VerdictError if the file is there but unusable
    write_verdict(model_dir, verdict) -> Path
    compare(reference, candidate, query_ids, thresholds=THRESHOLDS) -> dict   # the three metrics + passed
    cpu_features() -> dict[str, bool | str]
    runs_natively(option, features) -> tuple[bool, str]
    choose_option(verdict, available, features) -> AutoChoice   # what `auto` runs, and why (with the figures)
    run_gate(model_dir, *, max_length=512, options=None, threads=None, log=print) -> Verdict
    time_again(entries, seconds_of, log) / settle_speeds(entries, reference_seconds)   # the timings' second pass
    gate_in_child(model_dir, *, max_length=512, timeout=1800) -> Verdict | None   # what model_download calls
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("service.fidelity_gate")

FORMAT_VERSION = 1
VERDICT_FILE = "fidelity.json"
THRESHOLDS: dict[str, float] = {"spearman": 0.999, "top10_overlap": 0.98, "max_abs_diff": 0.01}
REFERENCE_OPTION = "torch-fp32"
# Every option the gate knows, "<backend>-<precision>" (CONTRACTS.md).
OPTION_NAMES = ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8")
TOP_K = 10
# Timings per option that passed (the first comes with the scoring; the next ones in the reverse order): docstring.
TIMING_PASSES = 2
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def option_parts(option: str) -> tuple[str, str]:
    """("torch", "bf16") for "torch-bf16": an option's backend and precision."""
    backend, precision = option.split("-", 1)
    return backend, precision


class VerdictError(ValueError):
    """fidelity.json exists but cannot be used (unreadable, another format, another model's weights)."""


# ----------------------------------------------------------------------------------------------------------
# The verdict
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    options: dict[str, dict[str, Any]]
    thresholds: dict[str, float] = field(default_factory=lambda: dict(THRESHOLDS))
    calibration: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    reference: str = REFERENCE_OPTION
    format: int = FORMAT_VERSION
    path: Path | None = None  # where it was read from (not written)

    def passed(self, option: str) -> bool:
        entry = self.options.get(option)
        return bool(entry and entry.get("passed") and "error" not in entry)

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "created": self.created, "model": self.model, "versions": self.versions,
                "cpu": self.cpu, "thresholds": self.thresholds, "calibration": self.calibration,
                "reference": self.reference, "options": self.options}

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path | None = None) -> Verdict:
        if not isinstance(data, dict) or not isinstance(data.get("options"), dict):
            raise VerdictError(f"{path or VERDICT_FILE}: no 'options' object: not a fidelity verdict")
        if int(data.get("format", FORMAT_VERSION)) != FORMAT_VERSION:
            raise VerdictError(f"{path or VERDICT_FILE}: format {data.get('format')} (this service reads "
                               f"format {FORMAT_VERSION}); re-run python -m service.fidelity_gate")
        return cls(options=data["options"], thresholds=data.get("thresholds") or dict(THRESHOLDS),
                   calibration=data.get("calibration") or {}, versions=data.get("versions") or {},
                   cpu=data.get("cpu") or {}, model=data.get("model") or {}, created=data.get("created", ""),
                   reference=data.get("reference", REFERENCE_OPTION), path=path)

    def summary(self, option: str) -> str:
        """'torch-bf16: Spearman 0.99991, top-10 overlap 0.996, max |diff| 2.1e-03, 2.07x fp32' (or the error)."""
        entry = self.options.get(option) or {}
        if "error" in entry:
            return f"{option}: not scored ({entry['error']})"
        if not entry:
            return f"{option}: not in the verdict"
        speed = entry.get("speedup_vs_reference")
        return (f"{option}: Spearman {entry.get('spearman', float('nan')):.5f}, top-10 overlap "
                f"{entry.get('top10_overlap', float('nan')):.3f}, max |diff| "
                f"{entry.get('max_abs_diff', float('nan')):.1e}"
                + (f", {speed:.2f}x fp32 speed" if speed else "")
                + ("" if entry.get("passed") else f" -> FAILED ({', '.join(entry.get('failed', []))})"))


def weight_files(model_dir: Path) -> list[Path]:
    model_dir = Path(model_dir)
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in model_dir.glob(pattern) if p.is_file()})
    if any(p.suffix == ".safetensors" for p in files):
        files = [p for p in files if p.suffix == ".safetensors"]
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_verdict(model_dir: Path | str | None) -> Verdict | None:
    """The verdict next to the model, or None when there is none. The weights it was taken on must still be
    the ones in the folder (same files and sizes; the sha256 is checked by the gate, not at every start-up)."""
    found = read_verdict_file(model_dir, VERDICT_FILE, VerdictError, "service.fidelity_gate")
    if found is None:
        return None
    verdict = Verdict.from_json(found[1], found[0])
    check_verdict_weights(found[0], verdict.model, VerdictError, "service.fidelity_gate")
    return verdict


def write_verdict(model_dir: Path | str, verdict: Verdict) -> Path:
    return write_verdict_file(model_dir, VERDICT_FILE, verdict.to_json())


def read_verdict_file(model_dir: Path | str | None, name: str, error: type[ValueError],
                      module: str) -> tuple[Path, Any] | None:
    """(path, parsed JSON) of the verdict file `name` next to the model, None when there is none; `error` (naming
    `python -m <module>`, which writes it) when it cannot be read. Also service.native_gate's native.json."""
    if model_dir is None:
        return None
    path = Path(model_dir) / name
    if not path.is_file():
        return None
    try:
        return path, json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise error(f"{path} cannot be read ({exc}); delete it or re-run python -m {module} "
                    f"{path.parent}") from None


def check_verdict_weights(path: Path, model: dict[str, Any], error: type[ValueError], module: str) -> None:
    """`error` unless the weight files a verdict recorded (`model["weights"]`: names and sizes) are the folder's."""
    recorded = {w.get("file"): w.get("bytes") for w in model.get("weights", [])}
    present = {p.name: p.stat().st_size for p in weight_files(path.parent)}
    if recorded and recorded != present:
        raise error(f"{path} was taken on other weights ({recorded}) than the folder holds ({present}); "
                    f"re-run python -m {module} {path.parent}")


def recorded_weights(model_dir: Path) -> list[dict[str, Any]]:
    """What a verdict records of the weights it was taken on: file, bytes, sha256."""
    return [{"file": p.name, "bytes": p.stat().st_size, "sha256": _sha256(p)} for p in weight_files(model_dir)]


def write_verdict_file(model_dir: Path | str, name: str, data: dict[str, Any]) -> Path:
    """Write `data` as `name` next to the model, atomically, readable by the service user."""
    path = Path(model_dir) / name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------


def _average_ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho (Pearson correlation of average ranks, as scipy.stats.spearmanr)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("need two score lists of the same length (at least 2)")
    ra, rb = _average_ranks(list(a)), _average_ranks(list(b))
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = math.sqrt(sum((x - ma) ** 2 for x in ra))
    vb = math.sqrt(sum((y - mb) ** 2 for y in rb))
    return cov / (va * vb) if va and vb else float("nan")


def top_k_overlap(reference: Sequence[float], candidate: Sequence[float], query_ids: Sequence[int],
                  k: int = TOP_K) -> float:
    """Mean over queries of |top-k(reference) ∩ top-k(candidate)| / k (k capped at the query's candidates)."""
    groups: dict[int, list[int]] = {}
    for index, query_id in enumerate(query_ids):
        groups.setdefault(query_id, []).append(index)
    overlaps = []
    for indices in groups.values():
        kk = min(k, len(indices))
        top_ref = set(sorted(indices, key=lambda i: (-reference[i], i))[:kk])
        top_cand = set(sorted(indices, key=lambda i: (-candidate[i], i))[:kk])
        overlaps.append(len(top_ref & top_cand) / kk)
    return sum(overlaps) / len(overlaps) if overlaps else float("nan")


def compare(reference: Sequence[float], candidate: Sequence[float], query_ids: Sequence[int],
            thresholds: dict[str, float] = THRESHOLDS) -> dict[str, Any]:
    """The three gate metrics of `candidate` against `reference` (scores of the same pairs), and the verdict."""
    ref, cand = [float(x) for x in reference], [float(x) for x in candidate]
    if not (len(ref) == len(cand) == len(query_ids)):
        raise ValueError(f"{len(ref)} reference scores, {len(cand)} candidate scores, {len(query_ids)} query ids")
    diffs = [abs(x - y) for x, y in zip(ref, cand)]
    finite = all(math.isfinite(x) for x in cand)
    metrics = {
        "spearman": spearman(ref, cand) if finite else float("nan"),
        "top10_overlap": top_k_overlap(ref, cand, query_ids) if finite else 0.0,
        "max_abs_diff": max(diffs) if finite else float("inf"),
        "mean_abs_diff": sum(diffs) / len(diffs) if finite else float("inf"),
        "pairs": len(ref),
    }
    failed = []
    if not metrics["spearman"] >= thresholds["spearman"]:  # also catches NaN
        failed.append("spearman")
    if not metrics["top10_overlap"] >= thresholds["top10_overlap"]:
        failed.append("top10_overlap")
    if not metrics["max_abs_diff"] <= thresholds["max_abs_diff"]:
        failed.append("max_abs_diff")
    metrics["passed"] = not failed
    metrics["failed"] = failed
    return metrics


# ----------------------------------------------------------------------------------------------------------
# The CPU, and what `auto` picks
# ----------------------------------------------------------------------------------------------------------


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """Flags that decide whether a precision runs natively (Linux /proc/cpuinfo; empty elsewhere)."""
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("flags", "Features") and not flags:
                flags = set(value.split())
            elif key == "model name" and value.strip():
                model = value.strip()
    except OSError:
        pass
    return {
        "model": model,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "amx_int8": "amx_int8" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
    }


def runs_natively(option: str, features: dict[str, Any]) -> tuple[bool, str]:
    """(native?, why): bf16 needs AVX-512 BF16 or AMX (else it is emulated, slower than fp32); int8 needs VNNI
    or AMX-INT8 (else the int8 dot products are emulated)."""
    precision = option_parts(option)[1]
    if precision == "fp32":
        return True, "fp32 runs everywhere"
    if precision == "bf16":
        if features.get("amx_bf16") or features.get("avx512_bf16"):
            return True, "AMX-BF16" if features.get("amx_bf16") else "AVX-512 BF16"
        return False, "no AVX-512 BF16 / AMX on this CPU (bf16 would be emulated)"
    if precision == "int8":
        if features.get("amx_int8") or features.get("avx512_vnni") or features.get("avx_vnni"):
            return True, "VNNI/AMX-INT8"
        return False, "no VNNI / AMX-INT8 on this CPU (int8 would be emulated)"
    return False, f"unknown precision {precision!r}"


@dataclass(frozen=True)
class AutoChoice:
    option: str  # "<backend>-<precision>"
    reason: str  # one line, with the figures: what the log line and /info say
    figures: dict[str, Any] = field(default_factory=dict)  # the chosen option's verdict entry (if any)

    @property
    def backend(self) -> str:
        return option_parts(self.option)[0]

    @property
    def precision(self) -> str:
        return option_parts(self.option)[1]


def choose_option(verdict: Verdict | None, available: Iterable[str], features: dict[str, Any] | None = None,
                  *, fallback: str = REFERENCE_OPTION, verdict_problem: str | None = None) -> AutoChoice:
    """What `auto` runs: among the `available` options (what this image/flavour can run) that passed the gate
    on this model, run natively on this CPU and were measured faster than the `fallback` (the reference itself, or
    onnx-fp32 in the ONNX flavour: its own measured speed), the fastest one; the fp32 `fallback` otherwise.

    No verdict: `fallback`, and the reason says so (and why, if `verdict_problem` is given)."""
    available = list(available)
    features = cpu_features() if features is None else features
    if verdict is None:
        why = verdict_problem or f"no {VERDICT_FILE} next to the model"
        return AutoChoice(fallback, f"{fallback}: {why}; no precision verdict, so fp32 (take one with "
                                    f"python -m service.fidelity_gate MODEL_DIR, or scripts/download_models.py)")
    candidates: list[tuple[float, str]] = []
    skipped: list[str] = []
    # Speeds are against the reference (torch-fp32); an option must beat what would run without it.
    baseline = 1.0 if fallback == REFERENCE_OPTION else \
        float(verdict.options.get(fallback, {}).get("speedup_vs_reference") or 1.0)
    for option in available:
        if option == fallback:
            continue
        entry = verdict.options.get(option)
        if not verdict.passed(option):
            skipped.append(verdict.summary(option) if entry else f"{option}: not gated")
            continue
        native, why = runs_natively(option, features)
        if not native:
            skipped.append(f"{option}: passed but {why}")
            continue
        speed = float(entry.get("speedup_vs_reference") or 0.0)
        if speed <= baseline:
            skipped.append(f"{option}: passed but not faster than fp32 ({speed:.2f}x)" if fallback == REFERENCE_OPTION
                           else f"{option}: passed but not faster than {fallback} ({speed:.2f}x against "
                                f"{baseline:.2f}x, both vs {REFERENCE_OPTION})")
            continue
        candidates.append((speed, option))
    if not candidates:
        detail = "; ".join(skipped) or "no reduced option on offer"
        return AutoChoice(fallback, f"{fallback}: no faster option passed the gate ({detail})",
                          verdict.options.get(fallback, {}))
    _, best = max(candidates)
    others = [s for s in skipped]
    reason = f"{best}: passed the gate on this model ({verdict.summary(best)})"
    if others:
        reason += "; not chosen: " + "; ".join(others)
    return AutoChoice(best, reason, verdict.options[best])


# ----------------------------------------------------------------------------------------------------------
# Running the gate (torch and the model needed from here on)
# ----------------------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib import metadata

    from service import __version__

    out = {"python": platform.python_version(), "service": __version__}
    for name in ("torch", "transformers", "sentence-transformers", "tokenizers", "onnxruntime"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _score_calibration(engine, calibration) -> tuple[list[float], float]:
    """Scores of every pair (calibration order) through `engine.rerank_now`, and the seconds it took (after one
    untimed warm-up query, so first-shape set-up costs are not counted)."""
    groups = calibration.by_query()
    engine.rerank_now(*groups[0])
    started = time.perf_counter()
    scores: list[float] = []
    for query, passages in groups:
        scores.extend(float(s) for s in engine.rerank_now(query, passages).relevance)
    return scores, time.perf_counter() - started


def _engine(reranker, backend, max_length: int, option: str):
    """The engine `option` is scored and timed through: batched and padded as it serves
    (`service.engine.factory.serving_batching`), so its speed-up is the one `auto` will get."""
    from service.engine.factory import serving_batching
    from service.engine.reranker import RerankEngine
    from service.engine.tokenization import PairEncoder

    backend_name, precision = option_parts(option)
    return RerankEngine(PairEncoder(reranker.tokenizer, max_length), backend, reranker.activate,
                        **serving_batching(backend_name, precision), max_wait_s=0.0)


def _offered_options(model_dir: Path) -> list[str]:
    from service.backends.onnx_backend import FILES, ONNX_DIR

    offered = ["torch-bf16"]
    for precision, filename in FILES.items():
        if (model_dir / ONNX_DIR / filename).is_file():
            offered.append(f"onnx-{precision}")
    return offered


def _make_backend(option: str, model_dir: Path, load: Callable[[], Any], threads: int | None):
    """(backend, loaded_model) for `option`; each torch option gets its own freshly loaded model, so a
    conversion (bf16 weights) never leaks into the reference."""
    backend_name, precision = option_parts(option)
    loaded_model = load()
    if backend_name == "torch":
        from service.backends.attention import sample_features
        from service.backends.torch_backend import TorchBackend

        return TorchBackend(loaded_model.model, precision=precision,
                            sample=sample_features(loaded_model.tokenizer)), loaded_model
    from service.backends.onnx_backend import FILES, ONNX_DIR, OnnxBackend

    return OnnxBackend(model_dir / ONNX_DIR / FILES[precision], precision=precision, threads=threads), loaded_model


def run_gate(model_dir: Path | str, *, max_length: int = 512, options: Sequence[str] | None = None,
             threads: int | None = None, thresholds: dict[str, float] = THRESHOLDS, calibration=None,
             write: bool = True, log: Callable[[str], None] = print) -> Verdict:
    """Score the calibration set in fp32 and in each option, compare, time, and write fidelity.json (unless
    `write=False`). `options` default: torch-bf16, plus onnx-fp32 / onnx-int8 when their files exist."""
    import torch

    from service.calibration import calibration_set
    from service.model_store import ModelSource, load_reranker

    model_dir = Path(model_dir).resolve()
    if threads:
        torch.set_num_threads(threads)
    calibration = calibration or calibration_set()
    options = list(options) if options is not None else _offered_options(model_dir)
    unknown = [o for o in options if o not in OPTION_NAMES]
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; the gate knows {OPTION_NAMES}")
    source = ModelSource(model_id=model_dir.name, path=model_dir)
    state: dict[str, int] = {}

    def load():
        loaded_model, effective = load_reranker(source, device="cpu", max_length=max_length,
                                                local_files_only=True)
        state["max_length"] = effective
        return loaded_model

    query_ids = calibration.query_ids
    log(f"fidelity gate: {model_dir.name}, {len(query_ids)} calibration pairs, options {options}")

    def scored(option: str) -> tuple[list[float], float, dict[str, Any]]:
        """(scores, seconds, backend facts) of `option`, on a model loaded for it alone."""
        backend, loaded_model = _make_backend(option, model_dir, load, threads)
        scores, seconds = _score_calibration(_engine(loaded_model, backend, state["max_length"], option),
                                             calibration)
        return scores, seconds, _backend_facts(backend)

    reference, reference_seconds, facts = scored(REFERENCE_OPTION)
    results: dict[str, dict[str, Any]] = {REFERENCE_OPTION: {
        **compare(reference, reference, query_ids, thresholds), "timings": [round(reference_seconds, 3)], **facts}}
    log(f"  {REFERENCE_OPTION}: {reference_seconds:.2f} s (reference)")
    for option in options:
        if option == REFERENCE_OPTION:
            continue
        try:
            scores, seconds, facts = scored(option)
        except Exception as exc:  # noqa: BLE001 - an option that cannot run is recorded, never picked
            results[option] = {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
            log(f"  {option}: could not be scored: {type(exc).__name__}: {exc}")
            continue
        results[option] = {**compare(reference, scores, query_ids, thresholds), "timings": [round(seconds, 3)],
                           **facts}
        log(f"  {option}: {seconds:.2f} s")
    contenders = {option: entry for option, entry in results.items() if entry.get("passed") and "timings" in entry}
    if len(contenders) > 1:  # a reduced option passed besides the reference: auto has a choice to make
        time_again(contenders, lambda option: scored(option)[1], log)
    settle_speeds(results, min(results[REFERENCE_OPTION]["timings"]))
    features = cpu_features()
    verdict = Verdict(
        options=results, thresholds=dict(thresholds), calibration=calibration.describe(), versions=_versions(),
        cpu={**features, "threads": torch.get_num_threads()},
        model={"directory": str(model_dir), "max_length": state["max_length"],
               "weights": recorded_weights(model_dir)},
        created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    for option in results:
        if option != REFERENCE_OPTION:
            log("  " + verdict.summary(option))
    if write:
        log(f"  wrote {write_verdict(model_dir, verdict)}")
    return verdict


def time_again(entries: dict[str, dict[str, Any]], seconds_of: Callable[[str], float],
               log: Callable[[str], None], *, warn: Callable[[str], None] | None = None,
               passes: int = TIMING_PASSES) -> None:
    """Time the options of `entries` (verdict entries, in the order they were first timed) `passes - 1` more times,
    each pass in the reverse order of the one before, appending to each entry's `timings`. A timing that raises is
    reported to `warn` (default `log`) and leaves that entry's earlier timings standing."""
    order = list(entries)
    for number in range(2, passes + 1):
        order.reverse()
        for option in order:
            try:
                seconds = seconds_of(option)
            except Exception as exc:  # noqa: BLE001 - it was scored and timed once: that timing stands
                (warn or log)(f"  {option}: timing pass {number} failed ({type(exc).__name__}: {exc}); its first "
                              "timing stands")
                continue
            entries[option]["timings"].append(round(seconds, 3))
            log(f"  {option}: {seconds:.2f} s (timing pass {number})")


def settle_speeds(entries: dict[str, dict[str, Any]], reference_seconds: float) -> None:
    """Each timed entry's `seconds` = its best timing, and its `speedup_vs_reference` against `reference_seconds`."""
    for entry in entries.values():
        if "timings" in entry:
            seconds = entry["seconds"] = min(entry["timings"])
            entry["speedup_vs_reference"] = round(reference_seconds / seconds, 3) if seconds else None


def _backend_facts(backend) -> dict[str, Any]:
    facts = {}
    for attr in ("mode", "attention"):
        value = getattr(backend, attr, None)
        if value is not None:
            facts[attr] = value
    return facts


def gate_in_child(model_dir: Path | str, *, max_length: int = 512, timeout: float = 1800,
                  log: Callable[[str], None] = logger.info,
                  warn: Callable[[str], None] = logger.warning) -> Verdict | None:
    """Run the gate in a child process with the Hub offline (as `verify_offline` loads the model), so the
    caller's memory and imports stay as they were. Returns the verdict, or None (with the reason logged) if
    the gate itself could not run: then no fidelity.json is written and `auto` stays on fp32."""
    ran = run_module_in_child("service.fidelity_gate", model_dir, max_length=max_length, timeout=timeout, log=log,
                              warn=warn, failed=f"fidelity gate: no verdict written ({VERDICT_FILE}), auto stays fp32")
    return read_verdict(model_dir) if ran else None


def run_module_in_child(module: str, model_dir: Path | str, *, max_length: int, timeout: float,
                        log: Callable[[str], None], warn: Callable[[str], None], failed: str) -> bool:
    """`python -m <module> MODEL_DIR --max-length N` with the Hub offline; its output goes to `log`. False (and
    `failed` with the cause to `warn`) when it timed out or failed. The precision gate and the native
    implementation's check (service/native_gate.py) both run this way."""
    from service.settings import PROJECT_ROOT

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", module, str(model_dir), "--max-length", str(max_length)]
    try:
        result = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        warn(f"{failed}: {module} took more than {timeout:.0f} s")
        return False
    for line in result.stdout.splitlines():
        log(line)
    if result.returncode != 0:
        tail = [line for line in result.stderr.strip().splitlines() if line.strip()][-3:]
        warn(f"{failed}: " + " | ".join(tail))
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.fidelity_gate",
                                     description="Take the precision verdict (fidelity.json) of a model folder.")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--max-length", type=int, default=512, help="tokens per pair (RERANK_MAX_LENGTH)")
    parser.add_argument("--option", action="append", choices=[o for o in OPTION_NAMES if o != REFERENCE_OPTION],
                        help="gate only these (repeatable); default: torch-bf16 and the ONNX files present")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: torch's)")
    parser.add_argument("--no-write", action="store_true", help="print the verdict, do not write fidelity.json")
    args = parser.parse_args(argv)
    if not (args.model_dir / "config.json").is_file():
        print(f"error: {args.model_dir} has no config.json: not a model folder", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    verdict = run_gate(args.model_dir, max_length=args.max_length, options=args.option, threads=args.threads,
                       write=not args.no_write)
    if args.no_write:
        print(json.dumps(verdict.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
