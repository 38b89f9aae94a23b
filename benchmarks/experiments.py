"""In-process micro-experiments on the model (no HTTP): where the seed path spends its time, and what
each service-side step buys. Writes benchmarks/EXPERIMENTS.md and benchmarks/experiments.json.

    python -m benchmarks.experiments [--model-path DIR] [--reps 5]

1. Profile of the seed path on W1 (`CrossEncoder.predict(pairs)`, defaults): tokenization vs
   embeddings vs attention (QKV projections, the score/softmax/AV core, output projection) vs the
   GEGLU feed-forward, from module hooks; the top torch operators; padding waste of its batches.
2. Variants, timed on the same pre-tokenized W1 and W2 inputs, alternating within every repetition:
   eager vs SDPA attention, unsorted vs length-sorted vs token-budget batches, fp32 vs bf16 (autocast,
   and bf16 weights), 2 threads vs 1. Ratios are to the seed path's forward time.
3. Numerical agreement of each variant with the seed path (max |score difference|).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fidelity import load_cross_encoder, restore_tensors, snapshot_tensors, use_sdpa
from benchmarks.machine import ModelShape, cpu_info, matmul_peak, versions
from benchmarks.servers import BENCH_DIR, WORK_DIR
from benchmarks.workloads import WorkloadSizes, build_workloads

SEED_BATCH = 32  # CrossEncoder.predict's default batch size


# ----------------------------------------------------------------------------------------------------------
# Batching plans
# ----------------------------------------------------------------------------------------------------------


def batches_in_order(lengths: Sequence[int], size: int) -> list[list[int]]:
    idx = list(range(len(lengths)))
    return [idx[i:i + size] for i in range(0, len(idx), size)]


def batches_st_predict(pairs: Sequence[Sequence[str]], size: int) -> list[list[int]]:
    """What sentence-transformers 5.x `CrossEncoder.predict` does: sort by character count (longest
    first, numpy argsort), then batches of `size` (padded to the longest in each)."""
    import numpy as np

    idx = [int(i) for i in np.argsort([-sum(len(t) for t in pair) for pair in pairs])]
    return [idx[i:i + size] for i in range(0, len(idx), size)]


def batches_sorted(lengths: Sequence[int], size: int) -> list[list[int]]:
    idx = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [idx[i:i + size] for i in range(0, len(idx), size)]


def batches_token_budget(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Longest first; close a batch before n x longest exceeds `budget` padded tokens."""
    idx = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in idx:
        if current and (len(current) + 1) * max(longest, lengths[i]) > budget:
            out.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, lengths[i])
    if current:
        out.append(current)
    return out


def padding(lengths: Sequence[int], batches: Sequence[Sequence[int]], shape: ModelShape) -> dict[str, float]:
    real = sum(lengths)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    real_flops = shape.flops([lengths[i] for b in batches for i in b])
    padded_flops = sum(len(b) * shape.flops_per_sequence(max(lengths[i] for i in b)) for b in batches)
    return {"real_tokens": real, "padded_tokens": padded, "token_overhead": padded / real - 1,
            "flops_overhead": padded_flops / real_flops - 1, "batches": len(batches)}


# ----------------------------------------------------------------------------------------------------------
# Forward passes
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    pairs: list[list[str]]
    lengths: list[int]
    features: dict[str, Any]  # per-pair token tensors (unpadded lists) to build padded batches from


def tokenize(model: Any, pairs: list[list[str]], max_length: int) -> Inputs:
    enc = model.tokenizer([p[0] for p in pairs], [p[1] for p in pairs], truncation=True, max_length=max_length)
    return Inputs(pairs, [len(x) for x in enc["input_ids"]], dict(enc))


def collate(model: Any, inputs: Inputs, batch: Sequence[int]) -> dict[str, Any]:
    items = [{k: v[i] for k, v in inputs.features.items()} for i in batch]
    return model.tokenizer.pad(items, padding=True, return_tensors="pt")


def forward_scores(model: Any, inputs: Inputs, batches: Sequence[Sequence[int]], bf16_autocast: bool = False,
                   padded: list[dict[str, Any]] | None = None) -> list[float]:
    import torch

    scores = [0.0] * len(inputs.lengths)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16_autocast else nullcontext()
    with torch.inference_mode(), ctx:
        for n, batch in enumerate(batches):
            features = padded[n] if padded is not None else collate(model, inputs, batch)
            logits = model.model(**features).logits.float()
            probs = torch.sigmoid(logits[:, 0])
            for i, p in zip(batch, probs.tolist()):
                scores[i] = p
    return scores


@dataclass
class Variant:
    name: str
    batching: str  # "st32" (the seed path), "order32", "sorted32", "budget"
    sdpa: bool = False
    precision: str = "fp32"  # fp32 | bf16-autocast | bf16-weights
    threads: int | None = None
    onnx_file: Path | None = None  # ONNX Runtime (CPU) instead of torch
    budget: int = 16384  # padded tokens per forward pass ("budget" batching)


VARIANTS = [
    Variant("seed path: char-sorted batches of 32, eager, fp32", "st32"),
    Variant("seed path + SDPA attention", "st32", sdpa=True),
    Variant("request order, batches of 32, eager (no sorting)", "order32"),
    Variant("token-sorted batches of 32, SDPA", "sorted32", sdpa=True),
    Variant("token budget 16384, SDPA", "budget", sdpa=True),
    Variant("token budget 16384, SDPA, bf16 autocast", "budget", sdpa=True, precision="bf16-autocast"),
    Variant("token budget 16384, SDPA, bf16 weights", "budget", sdpa=True, precision="bf16-weights"),
    Variant("token budget 16384, eager, bf16 autocast", "budget", precision="bf16-autocast"),
    Variant("token budget 16384, SDPA, fp32, 1 thread", "budget", sdpa=True, threads=1),
    Variant("token budget 8192, SDPA", "budget", sdpa=True, budget=8192),
    Variant("token budget 4096, SDPA", "budget", sdpa=True, budget=4096),
    Variant("token budget 2048, SDPA", "budget", sdpa=True, budget=2048),
]


def plan_for(variant: Variant, lengths: Sequence[int], pairs: Sequence[Sequence[str]]) -> list[list[int]]:
    if variant.batching == "st32":
        return batches_st_predict(pairs, SEED_BATCH)
    if variant.batching == "order32":
        return batches_in_order(lengths, SEED_BATCH)
    if variant.batching == "sorted32":
        return batches_sorted(lengths, SEED_BATCH)
    return batches_token_budget(lengths, variant.budget)


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux: writing 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


_ORT_SESSIONS: dict[Path, Any] = {}


def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    if path not in _ORT_SESSIONS:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        _ORT_SESSIONS[path] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return _ORT_SESSIONS[path]


def onnx_scores(session: Any, inputs: Inputs, batches: Sequence[Sequence[int]],
                padded: list[dict[str, Any]]) -> list[float]:
    import numpy as np

    names = {i.name for i in session.get_inputs()}
    scores = [0.0] * len(inputs.lengths)
    for batch, features in zip(batches, padded):
        feeds = {k: v.numpy().astype(np.int64) for k, v in features.items() if k in names}
        logits = session.run(None, feeds)[0].reshape(len(batch), -1)[:, 0].astype(np.float64)
        for i, p in zip(batch, (1 / (1 + np.exp(-logits))).tolist()):
            scores[i] = p
    return scores


def run_variant(model: Any, inputs: Inputs, variant: Variant, padded: list[dict[str, Any]]) -> tuple[float, list[float]]:
    import torch

    if variant.onnx_file is not None:
        session = _ort_session(variant.onnx_file, variant.threads or torch.get_num_threads())
        batches = plan_for(variant, inputs.lengths, inputs.pairs)
        t0 = time.perf_counter()
        scores = onnx_scores(session, inputs, batches, padded)
        return time.perf_counter() - t0, scores

    default_threads = torch.get_num_threads()
    if variant.threads:
        torch.set_num_threads(variant.threads)
    if variant.sdpa:
        use_sdpa(model)
    saved = None
    if variant.precision == "bf16-weights":
        # bf16 -> fp32 does not give the fp32 weights back: keep them to restore afterwards.
        saved = snapshot_tensors(model.model)
        model.model.to(torch.bfloat16)
    try:
        batches = plan_for(variant, inputs.lengths, inputs.pairs)
        t0 = time.perf_counter()
        scores = forward_scores(model, inputs, batches, variant.precision == "bf16-autocast", padded)
        elapsed = time.perf_counter() - t0
    finally:
        if saved is not None:
            restore_tensors(model.model, saved)
        if variant.sdpa:
            use_sdpa(model, None)
        torch.set_num_threads(default_threads)
    return elapsed, scores


# ----------------------------------------------------------------------------------------------------------
# Profile of the seed path
# ----------------------------------------------------------------------------------------------------------


class ModuleTimer:
    """Wall time per module category via forward pre/post hooks (CPU ops are synchronous)."""

    def __init__(self, model: Any) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.handles = []
        self._starts: dict[int, float] = {}
        root = model.model
        for name, module in root.named_modules():
            category = self._category(name, module)
            if category:
                self._hook(module, category)
        # sentence-transformers 5 calls the model's `forward` method directly (no module hooks fire on the
        # root), so the forward total is timed on its Transformer module, which wraps exactly that call.
        self._hook(model[0], "model forward (total)")

    def _hook(self, module: Any, category: str) -> None:
        self.handles.append(module.register_forward_pre_hook(self._pre))
        self.handles.append(module.register_forward_hook(self._post(category)))

    @staticmethod
    def _category(name: str, module: Any) -> str | None:
        cls = type(module).__name__
        leaf = name.rsplit(".", 1)[-1]
        if cls.endswith("Embeddings"):
            return "embeddings"
        if cls.endswith("SelfAttention"):
            return "attention: self-attention module (QKV + core)"
        if leaf in ("query", "key", "value") and "attention" in name:
            return "attention: QKV projections"
        if cls.endswith("SelfOutput"):
            return "attention: output projection + LayerNorm"
        if cls.endswith(("GLUMLP", "Intermediate")) or (cls.endswith("Output") and "mlp" in name):
            return "feed-forward (GEGLU)"
        if cls.endswith("Encoder"):
            return "encoder (all layers)"
        return None

    def _pre(self, module: Any, args: Any) -> None:
        self._starts[id(module)] = time.perf_counter()

    def _post(self, category: str) -> Callable:
        def hook(module: Any, args: Any, output: Any) -> None:
            self.totals[category] += time.perf_counter() - self._starts.pop(id(module))
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def profile_seed_path(model: Any, pairs: list[list[str]], reps: int) -> dict[str, Any]:
    import torch

    model.predict(pairs, show_progress_bar=False)  # warm-up
    totals: list[float] = []
    timers: list[dict[str, float]] = []
    for _ in range(reps):
        timer = ModuleTimer(model)
        t0 = time.perf_counter()
        model.predict(pairs, show_progress_bar=False)
        totals.append(time.perf_counter() - t0)
        timer.remove()
        timers.append(dict(timer.totals))
    best = min(range(reps), key=lambda i: totals[i])
    t = timers[best]
    total = totals[best]
    forward = t["model forward (total)"]
    core = t["attention: self-attention module (QKV + core)"] - t["attention: QKV projections"]
    breakdown = {
        "tokenization + collation + Python around the model": total - forward,
        "embeddings": t["embeddings"],
        "attention: QKV projections": t["attention: QKV projections"],
        "attention: core (QK^T, scale, mask + ALiBi add, softmax, AV)": core,
        "attention: output projection + LayerNorm": t["attention: output projection + LayerNorm"],
        "feed-forward (GEGLU)": t["feed-forward (GEGLU)"],
        "rest of the forward (ALiBi slice, masks, pooler, classifier)":
            forward - t["embeddings"] - t["attention: self-attention module (QKV + core)"]
            - t["attention: output projection + LayerNorm"] - t["feed-forward (GEGLU)"],
    }
    # Top operators with the torch profiler (one extra run).
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model.predict(pairs, show_progress_bar=False)
    ops = [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1000, "calls": e.count}
           for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]]
    return {"total_s": total, "all_totals_s": totals, "breakdown_s": breakdown, "top_ops": ops}


def tokenization_time(model: Any, pairs: list[list[str]], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for i in range(0, len(pairs), SEED_BATCH):
            chunk = pairs[i:i + SEED_BATCH]
            model.tokenizer([p[0] for p in chunk], [p[1] for p in chunk], padding=True, truncation=True,
                            return_tensors="pt", max_length=model.max_length)
        best = min(best, time.perf_counter() - t0)
    return best


# ----------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------


def run(model_path: Path, reps: int, log: Callable[[str], None] = print,
        onnx_files: Sequence[Path] = ()) -> dict[str, Any]:
    import torch

    variants = VARIANTS + [Variant(f"token budget 16384, ONNX Runtime {f.parent.name}/{f.name}", "budget",
                                   onnx_file=f.resolve()) for f in onnx_files]

    shape = ModelShape.from_config(model_path)
    model = load_cross_encoder(model_path, max_length=512)
    w1, w2, _ = build_workloads(WorkloadSizes())
    results: dict[str, Any] = {"model_path": str(model_path), "shape": shape.as_dict(), "reps": reps,
                               "threads": torch.get_num_threads(), "load_1min_start": os.getloadavg()[0]}
    results["matmul_peak_gflops"] = {d: matmul_peak(d, 2048).gflops for d in ("fp32", "bf16")}
    log(f"matmul peak: {results['matmul_peak_gflops']}")

    w1_pairs = [[w1.requests[0].query, d] for d in w1.requests[0].documents]
    log("profiling the seed path on W1...")
    results["profile_W1"] = profile_seed_path(model, w1_pairs, reps)
    results["profile_W1"]["tokenizer_only_s"] = tokenization_time(model, w1_pairs, reps)

    results["variants"] = {}
    for workload in (w1, w2):
        request = workload.requests[0]
        inputs = tokenize(model, [[request.query, d] for d in request.documents], 512)
        pad_info = {name: padding(inputs.lengths, plan_for(Variant(name, name), inputs.lengths, inputs.pairs), shape)
                    for name in ("st32", "order32", "sorted32", "budget")}
        padded = {v.name: [collate(model, inputs, b) for b in plan_for(v, inputs.lengths, inputs.pairs)]
                  for v in variants}
        times: dict[str, list[float]] = defaultdict(list)
        scores: dict[str, list[float]] = {}
        for v in variants:  # warm-up (oneDNN primitive creation for new shapes)
            run_variant(model, inputs, v, padded[v.name])
        peak_extra: dict[str, float] = {}
        for v in variants:  # activation memory: peak RSS above the steady RSS while the variant runs
            import gc

            gc.collect()
            base_rss = current_rss_mib()
            if reset_peak_rss():
                run_variant(model, inputs, v, padded[v.name])
                peak_extra[v.name] = peak_rss_mib() - base_rss
        for rep in range(reps):
            order = variants[rep % len(variants):] + variants[:rep % len(variants)]
            for v in order:
                elapsed, s = run_variant(model, inputs, v, padded[v.name])
                times[v.name].append(elapsed)
                scores[v.name] = s
        base_name = variants[0].name
        base = statistics.median(times[base_name])
        useful = shape.flops(inputs.lengths)
        rows = {}
        for v in variants:
            med = statistics.median(times[v.name])
            peak = results["matmul_peak_gflops"]["bf16" if v.precision != "fp32" else "fp32"] * 1e9
            rows[v.name] = {"median_s": med, "all_s": times[v.name], "ratio_to_seed": med / base,
                            "speedup": base / med, "tokens_per_s": sum(inputs.lengths) / med,
                            "mfu": useful / med / peak * (results["threads"] / (v.threads or results["threads"])),
                            "peak_rss_above_steady_mib": peak_extra.get(v.name),
                            "max_abs_diff_vs_seed": max(abs(a - b) for a, b in zip(scores[v.name],
                                                                                   scores[base_name]))}
            log(f"  {workload.key} {v.name:<58} {med * 1000:8.1f} ms  x{base / med:.2f}  "
                f"max|d| {rows[v.name]['max_abs_diff_vs_seed']:.1e}")
        results["variants"][workload.key] = {"pairs": len(inputs.lengths), "real_tokens": sum(inputs.lengths),
                                             "padding": pad_info, "rows": rows}
    results["load_1min_end"] = os.getloadavg()[0]
    results["versions"] = versions()
    results["cpu"] = {k: v for k, v in cpu_info().items() if k in ("model", "matmul_flags", "cores_online")}
    return results


def render(results: dict[str, Any]) -> str:
    out: list[str] = []
    add = out.append
    add("# Micro-experiments on the model (in-process, no HTTP)\n")
    add("Generated by `python -m benchmarks.experiments`; do not edit by hand. Raw numbers: "
        "[`experiments.json`](experiments.json). Model: the JinaBERT-shaped proxy (random weights, "
        "normal(0, 0.1) init) unless stated otherwise: `" + Path(results["model_path"]).name + "`. "
        f"{results['threads']} threads; 1-min load {results['load_1min_start']:.2f} at start, "
        f"{results['load_1min_end']:.2f} at the end. Matmul peak (2048², torch): fp32 "
        f"{results['matmul_peak_gflops']['fp32']:.0f} GFLOP/s, bf16 {results['matmul_peak_gflops']['bf16']:.0f} "
        "GFLOP/s.\n")
    prof = results["profile_W1"]
    add(f"## Where the seed path spends W1 (`CrossEncoder.predict`, 100 pairs, best of {results['reps']}: "
        f"{prof['total_s'] * 1000:,.0f} ms)\n")
    add("| part | ms | share |")
    add("|---|---|---|")
    for part, secs in prof["breakdown_s"].items():
        add(f"| {part} | {secs * 1000:,.0f} | {secs / prof['total_s'] * 100:.1f}% |")
    add(f"\nThe tokenizer alone (same batches of 32, padded): {prof['tokenizer_only_s'] * 1000:.0f} ms.\n")
    add("Top operators (torch profiler, self CPU time, one run):\n")
    add("| operator | self ms | calls |")
    add("|---|---|---|")
    for op in prof["top_ops"]:
        add(f"| `{op['op']}` | {op['self_cpu_ms']:,.0f} | {op['calls']} |")
    add("")
    for wk, data in results["variants"].items():
        add(f"## {wk}: {data['pairs']} pairs, {data['real_tokens']:,} real tokens\n")
        add("Padding (tokens and FLOPs computed on padding, as a fraction of the useful ones):\n")
        add("| batching | batches | padded tokens | token overhead | FLOP overhead |")
        add("|---|---|---|---|---|")
        names = {"st32": "seed path: sorted by characters, batches of 32 (sentence-transformers 5 predict)",
                 "order32": "request order, batches of 32 (no sorting)", "sorted32": "length-sorted, batches of 32",
                 "budget": "length-sorted, 16,384-token budget"}
        for key, p in data["padding"].items():
            add(f"| {names[key]} | {p['batches']} | {p['padded_tokens']:,} | {p['token_overhead'] * 100:.0f}% | "
                f"{p['flops_overhead'] * 100:.0f}% |")
        add(f"\nForward passes on pre-tokenized input (median of {results['reps']}, variants alternated "
            "within each repetition):\n")
        add("| variant | median ms | speed-up vs seed path | tokens/s | MFU | peak RSS above steady | "
            "max abs score diff vs seed |")
        add("|---|---|---|---|---|---|---|")
        for name, row in data["rows"].items():
            extra = row.get("peak_rss_above_steady_mib")
            add(f"| {name} | {row['median_s'] * 1000:,.1f} | {row['speedup']:.2f}x | {row['tokens_per_s']:,.0f} | "
                f"{row['mfu'] * 100:.0f}% | {'–' if extra is None else f'{extra:,.0f} MiB'} | "
                f"{row['max_abs_diff_vs_seed']:.1e} |")
        add("")
    add("Peak RSS above steady: the process's peak RSS (VmHWM, reset before the run) minus its RSS before it, "
        "for one run of the variant: roughly the activation memory a worker needs on top of the model. ")
    add("MFU of the 1-thread row is against the per-thread share of the peak. bf16 rows are against the bf16 "
        "peak. Score differences of bf16 on this proxy reflect its random weights (see fidelity).")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", type=Path)
    parser.add_argument("--model-cache", type=Path, default=WORK_DIR / "models")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quiet-load", type=float, default=0.7, help="wait until the 1-min load is below this")
    parser.add_argument("--max-wait", type=float, default=600.0, help="longest wait for a quiet machine (s)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR)
    parser.add_argument("--onnx-file", type=Path, action="append", default=[],
                        help="also time an ONNX export of the same model with ONNX Runtime (repeatable)")
    args = parser.parse_args(argv)
    model_path = args.model_path
    if model_path is None:
        from tests.support.model_factory import JINA_TINY_DIMS, cached_model

        model_path = cached_model("alibi", args.model_cache, **JINA_TINY_DIMS)
    from benchmarks.bench import wait_for_quiet

    wait_for_quiet(args.quiet_load, args.max_wait, print)
    results = run(model_path.resolve(), args.reps, onnx_files=args.onnx_file)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "experiments.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out_dir / "EXPERIMENTS.md").write_text(render(results))
    print(f"wrote {args.out_dir / 'EXPERIMENTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
