"""In-process: fp32 vs bf16 with converted weights vs bf16 autocast, same engine path, same requests.

    python -m benchmarks.precision_modes [--model-path DIR] [--requests 6] [--json benchmarks/precision_modes.json]

Each mode gets a freshly loaded model (TorchBackend, verified SDPA), one warm-up request, then `--requests`
W1-shaped (100 documents) and 4x as many W2-shaped (20 documents) requests through `RerankEngine.rerank_now`;
reports ms per request and the process's RSS growth (the autocast weight-cast cache shows up there).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(model_path: Path, requests: int) -> list[dict]:
    import torch

    from benchmarks.workloads import WorkloadSizes, build_workloads
    from service.backends.attention import sample_features
    from service.backends.torch_backend import TorchBackend
    from service.fidelity_gate import _engine
    from service.model_store import ModelSource, load_reranker

    torch.set_num_threads(2)
    w1, w2, _ = build_workloads(WorkloadSizes())
    out = []
    for name, precision, mode in (("fp32", "fp32", "weights"), ("bf16-weights", "bf16", "weights"),
                                  ("bf16-autocast", "bf16", "autocast"), ("fp32 (again)", "fp32", "weights")):
        gc.collect()
        loaded_model, max_length = load_reranker(ModelSource(model_id=model_path.name, path=model_path),
                                                 max_length=512)
        backend = TorchBackend(loaded_model.model, precision=precision, bf16_mode=mode,
                               sample=sample_features(loaded_model.tokenizer))
        engine = _engine(loaded_model, backend, max_length)
        engine.rerank_now(w1.requests[-1].query, list(w1.requests[-1].documents))
        before = _rss_mib()
        timings = {}
        for key, workload, count in (("W1", w1, requests), ("W2", w2, requests * 4)):
            started = time.perf_counter()
            for i in range(count):
                request = workload.request(i)
                engine.rerank_now(request.query, list(request.documents))
            timings[key] = (time.perf_counter() - started) / count * 1000
        out.append({"mode": name, "W1_ms": round(timings["W1"], 1), "W2_ms": round(timings["W2"], 1),
                    "rss_growth_mib": round(_rss_mib() - before, 1), "rss_mib": round(_rss_mib(), 1),
                    "attention": backend.attention})
        print(f"{name:<14} W1 {timings['W1']:8.1f} ms   W2 {timings['W2']:7.1f} ms   RSS +{out[-1]['rss_growth_mib']:.0f}"
              f" MiB ({out[-1]['rss_mib']:.0f} MiB)   {backend.attention}", flush=True)
        del engine, backend, loaded_model
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision_modes")
    parser.add_argument("--model-path", type=Path)
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.model_path is None:
        from benchmarks.servers import WORK_DIR
        from tests.support.model_factory import JINA_TINY_DIMS, cached_model

        args.model_path = cached_model("alibi", WORK_DIR / "models", **JINA_TINY_DIMS).resolve()
    results = measure(args.model_path, args.requests)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
