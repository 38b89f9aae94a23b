"""One benchmark run: start the contenders, measure them alternately on W1/W2/W3, collect the numbers.

Order of a run:
 1. wait for a quiet machine (1-minute load below a threshold, bounded wait), record the load;
 2. machine facts and the matmul peak (fp32 and bf16) in this process, before any server starts;
 3. start each contender in turn (one at a time, so cold starts do not overlap), time process start ->
    first 200 on its health route; RSS of every server's process tree is sampled throughout;
 4. warm-up calls (not measured) and a score agreement check against the seed-style server;
 5. W1, W2: rounds of sequential calls, contender order rotated every round; W3: rounds of bounded
    bursts from concurrent clients, rotated the same way; only one server is busy at a time;
 6. stop the servers (their own process groups), compute the statistics.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import fidelity
from benchmarks.loadgen import Samples, burst, call, percentile, sequential
from benchmarks.machine import ModelShape, cpu_info, matmul_peak, versions
from benchmarks.servers import (
    INFINITY_VENV,
    PROJECT_ROOT,
    WORK_DIR,
    Contender,
    MemorySampler,
    ServerProcess,
    infinity_contender,
    seed_contender,
    service_contender,
)
from benchmarks.workloads import Workload, WorkloadSizes, build_workloads, count_tokens

CONTENDER_ORDER = ("seed", "infinity", "service", "service-remote", "service-config", "service-bf16")
# The service in its variants: fp32 as the image serves it (the native JinaBERT implementation, which the proxy's
# native.json lets it use, as the image build's check does for the real model); fp32 on the model's remote code
# through transformers, in both forms of JinaBERT's attention switch (module form: the default proxy; config
# form: same weights, `config_form_model_path`); bf16 (converted weights) as the image serves it.
REMOTE_CODE = {"RERANK_IMPLEMENTATION": "remote-code"}
SERVICE_VARIANTS = {
    "service": ("(c) this service, fp32", {}),
    "service-remote": ("(c1) this service, fp32, remote code", REMOTE_CODE),
    "service-config": ("(c2) this service, fp32, remote code, config form", REMOTE_CODE),
    "service-bf16": ("(c3) this service, bf16", {"RERANK_PRECISION": "bf16"}),
}


@dataclass
class Plan:
    """How much of each workload is measured; `smoke()` is the end-to-end test's size."""

    sizes: WorkloadSizes = field(default_factory=WorkloadSizes)
    w1_rounds: int = 4
    w1_block: int = 2  # sequential calls per contender per round
    w2_rounds: int = 5
    w2_block: int = 4
    w3_rounds: int = 3  # bursts per contender
    warmup_calls: int = 2
    matmul_n: int = 2048
    health_timeout_s: float = 600.0
    request_timeout_s: float = 600.0
    parallel_start: bool = False  # smoke only: start all servers at once (cold starts then overlap)
    # Starts per contender for the cold-start figure (the median): the measured server's own start, then each
    # server started alone again after the run. One start is one sample of a noisy figure (seen for (c): 2.3 s in
    # one run, 7.4 s in another on the same CPU model, 2.4-3.0 s in three starts by hand right after that one).
    cold_starts: int = 3

    @classmethod
    def smoke(cls) -> Plan:
        return cls(sizes=WorkloadSizes.smoke(), w1_rounds=1, w1_block=1, w2_rounds=1, w2_block=2, w3_rounds=1,
                   warmup_calls=1, matmul_n=256, health_timeout_s=120.0, request_timeout_s=120.0,
                   parallel_start=True, cold_starts=2)


@dataclass
class RunConfig:
    model_path: Path
    model_label: str
    contenders: tuple[str, ...]
    plan: Plan
    max_length: int = 512
    quiet_load: float = 0.7
    quiet_wait_s: float = 600.0
    service_env: dict[str, str] = field(default_factory=dict)
    config_form_model_path: Path | None = None  # the same weights with the config form of the attention switch
    service_python: str = sys.executable  # benchmarks.service_env: the interpreter (c) runs under
    log_dir: Path = WORK_DIR / "logs"
    infinity_status: dict[str, Any] | None = None  # from benchmarks.infinity_env, when it was attempted


def wait_for_quiet(threshold: float, max_wait_s: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Wait (bounded) until the 1-minute load average is below `threshold`; report what was seen."""
    start = time.monotonic()
    first = os.getloadavg()
    while True:
        load = os.getloadavg()
        if load[0] < threshold:
            break
        waited = time.monotonic() - start
        if waited >= max_wait_s:
            log(f"load {load[0]:.2f} still >= {threshold} after {waited:.0f} s: measuring anyway (noted)")
            break
        log(f"waiting for a quiet machine: 1-min load {load[0]:.2f} >= {threshold} ({waited:.0f} s)")
        time.sleep(15)
    return {"threshold": threshold, "at_start": first[0], "when_measuring": load[0],
            "waited_s": round(time.monotonic() - start, 1), "quiet": load[0] < threshold}


def _contenders(config: RunConfig) -> list[Contender]:
    built = {
        "seed": lambda: seed_contender(config.model_path),
        "infinity": lambda: infinity_contender(config.model_path, INFINITY_VENV),
    }
    for key, (label, env) in SERVICE_VARIANTS.items():
        path = config.config_form_model_path if key == "service-config" else config.model_path
        if path is not None:
            built[key] = (lambda path=path, env=env, key=key, label=label:
                          service_contender(path, {**config.service_env, **env}, key=key, label=label,
                                            python=config.service_python))
    return [built[key]() for key in CONTENDER_ORDER if key in config.contenders and key in built]


def _cold_starts(servers: list[ServerProcess], failed: dict[str, str], plan: Plan, log_dir: Path,
                 log: Callable[[str], None]) -> dict[str, list[float]]:
    """Each contender's cold starts: its measured server's, then `plan.cold_starts - 1` more, each server started
    alone (the others stopped) and stopped once healthy. A start that fails here is logged and left out."""
    runs = {s.contender.key: [s.cold_start_s] for s in servers if s.contender.key not in failed}
    if plan.cold_starts > 1 and runs:
        log(f"cold start again: {plan.cold_starts - 1} more per contender, each server alone...")
    for _ in range(plan.cold_starts - 1):
        for server in servers:
            key = server.contender.key
            if key not in runs:
                continue
            again = ServerProcess(server.contender, log_dir / "cold-starts")
            again.start()
            try:
                if again.wait_healthy(plan.health_timeout_s):
                    runs[key].append(again.cold_start_s)
                else:
                    log(f"  {key}: not healthy in a repeated start, left out: {again.error}")
            finally:
                again.stop()
    for key, seconds in runs.items():
        log(f"  {key}: " + ", ".join(f"{t:.2f}" for t in seconds) + " s")
    return runs


def _dtype_from_info(info: Any) -> str:
    """'bf16' if a served /info says its precision or dtype is bfloat16, else 'fp32'."""
    stack = [info]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(value, str) and any(w in key.lower() for w in ("precision", "dtype")) and \
                        value.lower() in ("bf16", "bfloat16", "torch.bfloat16"):
                    return "bf16"
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return "fp32"


def _rotated(items: list[ServerProcess], shift: int) -> list[ServerProcess]:
    if not items:
        return items
    shift %= len(items)
    return items[shift:] + items[:shift]


def _measure(servers: list[ServerProcess], workload: Workload, rounds: int, block: int,
             fn: Callable[[ServerProcess, int], Samples], log: Callable[[str], None]) -> dict[str, Samples]:
    results = {s.contender.key: Samples() for s in servers}
    idle_cpu = {s.contender.key: 0.0 for s in servers}
    for r in range(rounds):
        for server in _rotated(servers, r):
            others = [s for s in servers if s is not server]
            before = {s.contender.key: s.cpu_seconds() for s in others}
            server.phase = workload.key
            samples = fn(server, r * block)
            server.phase = "idle"
            for s in others:
                idle_cpu[s.contender.key] += s.cpu_seconds() - before[s.contender.key]
            results[server.contender.key].extend(samples)
            lat = samples.latencies_s
            log(f"  {workload.key} round {r + 1}/{rounds} {server.contender.key:<8} "
                f"n={len(lat)} median {percentile(lat, 50) * 1000:.0f} ms"
                + (f", {samples.requests / samples.wall_s:.2f} req/s" if samples.wall_s else ""))
    for key, cpu in idle_cpu.items():
        results[key].idle_cpu_s = cpu
    return results


def _agreement(servers: list[ServerProcess], workloads: list[Workload], timeout_s: float) -> dict[str, Any]:
    """Scores of each contender vs the seed-style server on the first request of W1 and W2."""
    import httpx

    by_key = {s.contender.key: s for s in servers}
    if "seed" not in by_key:
        return {}
    out: dict[str, Any] = {}
    with httpx.Client() as client:
        for workload in workloads[:2]:
            request = workload.request(0)
            reference = call(client, by_key["seed"], request, timeout_s)
            for key, server in by_key.items():
                if key == "seed":
                    continue
                result = fidelity.compare(reference, call(client, server, request, timeout_s), key)
                out.setdefault(key, {})[workload.key] = {"spearman": result.spearman,
                                                         "max_abs_diff": result.max_abs_diff,
                                                         "n": result.n}
    return out


def run(config: RunConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    plan = config.plan
    started = time.time()
    load = wait_for_quiet(config.quiet_load, config.quiet_wait_s, log)

    log("machine facts and matmul peak...")
    import torch

    threads = torch.get_num_threads()
    peaks = {dtype: asdict(matmul_peak(dtype, plan.matmul_n)) for dtype in ("fp32", "bf16")}
    log("  " + ", ".join(f"{d}: {p['gflops']:.0f} GFLOP/s" for d, p in peaks.items()) + f" ({threads} threads)")

    shape = ModelShape.from_config(config.model_path)
    workloads = build_workloads(plan.sizes)
    count_tokens(workloads, config.model_path, config.max_length)
    w1, w2, w3 = workloads

    servers = [ServerProcess(c, config.log_dir) for c in _contenders(config)]
    failed: dict[str, str] = {}
    with MemorySampler(servers):
        if plan.parallel_start:
            for server in servers:
                server.start()
        for server in servers:
            log(f"starting {server.contender.label}...")
            if not plan.parallel_start:
                server.start()
            if server.wait_healthy(plan.health_timeout_s):
                server.contender.dtype = _dtype_from_info(server.info)
                log(f"  healthy after {server.cold_start_s:.2f} s on port {server.port}")
            else:
                failed[server.contender.key] = server.error or "unknown error"
                log(f"  FAILED: {server.error}")
                server.stop()
        live = [s for s in servers if s.contender.key not in failed]
        try:
            log("warm-up and score agreement...")
            import httpx

            with httpx.Client() as client:
                for server in live:
                    server.phase = "warmup"
                    # Warm-up from the end of each pool (the measured calls start at its beginning).
                    call(client, server, w1.request(len(w1.requests) - 1), plan.request_timeout_s)
                    for i in range(plan.warmup_calls):
                        call(client, server, w2.request(len(w2.requests) - 1 - i), plan.request_timeout_s)
                    server.phase = "idle"
            agreement = _agreement(live, workloads, plan.request_timeout_s)
            load["before_timing"] = os.getloadavg()[0]

            log("measuring W1 (sequential)...")
            m1 = _measure(live, w1, plan.w1_rounds, plan.w1_block,
                          lambda s, start: sequential(s, w1, start, plan.w1_block, plan.request_timeout_s), log)
            log("measuring W2 (sequential)...")
            m2 = _measure(live, w2, plan.w2_rounds, plan.w2_block,
                          lambda s, start: sequential(s, w2, start, plan.w2_block, plan.request_timeout_s), log)
            log(f"measuring W3 ({w3.concurrency} concurrent clients, {w3.total_requests} requests per burst)...")
            m3 = _measure(live, w3, plan.w3_rounds, w3.total_requests,
                          lambda s, start: burst(s, w3, start, plan.request_timeout_s), log)
            load["after_timing"] = os.getloadavg()[0]
        finally:
            for server in servers:
                server.stop()

    cold_starts = _cold_starts(servers, failed, plan, config.log_dir, log)

    # The peak is the best the machine can do: measure again now that the servers are gone, keep the best.
    for dtype, peak in peaks.items():
        again = asdict(matmul_peak(dtype, plan.matmul_n))
        peak["gflops_runs"] = [peak["gflops"], again["gflops"]]
        if again["gflops"] > peak["gflops"]:
            peak.update({k: again[k] for k in ("gflops", "seconds", "path")})
    log("  matmul peak after the run: " + ", ".join(f"{d}: {p['gflops_runs'][1]:.0f} GFLOP/s"
                                                    for d, p in peaks.items()))

    peak_by_dtype = {d: p["gflops"] * 1e9 for d, p in peaks.items()}
    contenders: dict[str, Any] = {}
    for server in servers:
        key = server.contender.key
        entry: dict[str, Any] = {"label": server.contender.label, "status": "failed" if key in failed else "ok",
                                 "command": " ".join(_display_argv(server.contender.argv(0))),
                                 "env": server.contender.env}
        if key in failed:
            entry["error"] = failed[key]
            contenders[key] = entry
            continue
        entry.update({
            "cold_start_s": statistics.median(cold_starts[key]),
            "cold_start_runs_s": cold_starts[key],
            "dtype_for_mfu": server.contender.dtype,
            "info": server.info,
            "memory": _memory(server),
            "agreement_vs_seed": agreement.get(key),
            "workloads": {
                "W1": _latency_stats(m1[key], w1, shape, peak_by_dtype[server.contender.dtype]),
                "W2": _latency_stats(m2[key], w2, shape, peak_by_dtype[server.contender.dtype]),
                "W3": _burst_stats(m3[key], w3, shape, peak_by_dtype[server.contender.dtype]),
            },
        })
        contenders[key] = entry
    _ratios(contenders)

    return {
        "generated_at": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "command": _command_line(),
        "machine": {**cpu_info(), "platform": platform.platform(), "harness_torch_threads": threads},
        "load": load,
        "versions": versions(INFINITY_VENV / "bin" / "python"),
        "model": {"label": config.model_label, "path": str(config.model_path), "shape": shape.as_dict(),
                  "parameters": shape.parameters(),
                  "flops_per_token_at_mean_W1_pair": shape.flops_per_token(_mean_pair(w1)),
                  "flops_per_token_at_mean_W2_pair": shape.flops_per_token(_mean_pair(w2))},
        "matmul_peak": peaks,
        "settings": {"plan": asdict(plan), "max_length_for_token_counts": config.max_length,
                     "contenders_requested": list(config.contenders), "service_env": config.service_env,
                     "service_python": config.service_python},
        "workloads": {w.key: {"description": w.description, "distinct_requests": len(w.requests),
                              "documents_per_request": len(w.requests[0].documents),
                              "mean_tokens_per_request": w.mean_tokens, "mean_tokens_per_pair": _mean_pair(w),
                              "max_tokens_per_pair": max(max(p) for p in w.pair_lengths),
                              "concurrency": w.concurrency, "requests_per_burst": w.total_requests or None}
                      for w in workloads},
        "infinity_install": config.infinity_status,
        "contenders": contenders,
    }


def _command_line() -> str:
    argv = list(sys.argv)
    if not argv or not argv[0]:
        return ""
    if argv[0].endswith(("benchmarks/__main__.py", "benchmarks/run.py")):
        argv[0:1] = ["python", "-m", "benchmarks"]
    return " ".join(_display_argv(argv))


def _display_argv(argv: list[str]) -> list[str]:
    out = []
    for arg in argv:
        try:
            out.append(str(Path(arg).relative_to(PROJECT_ROOT)) if arg.startswith("/") else arg)
        except ValueError:
            out.append(arg)
    return out


def _mean_pair(workload: Workload) -> float:
    lengths = [n for pair in workload.pair_lengths for n in pair]
    return sum(lengths) / len(lengths) if lengths else 0.0


def _memory(server: ServerProcess) -> dict[str, Any]:
    mib = 1024 * 1024
    serving = [t for phase, t in server.memory.items() if phase.startswith("W")]
    peak = max(serving, key=lambda t: t.peak_process_rss, default=None)
    return {
        "peak_rss_per_worker_serving_mib": peak.peak_process_rss / mib if peak else 0.0,
        # of which file-backed (shared libraries' code, the mapped model file), in the same sample
        "peak_rss_per_worker_serving_file_mib": (peak.peak_process_file_rss / mib
                                                 if peak and peak.peak_process_file_rss is not None else None),
        "peak_rss_per_worker_W1_mib": server.memory["W1"].peak_process_rss / mib if "W1" in server.memory else None,
        "peak_rss_tree_serving_mib": max((t.peak_tree_rss for t in serving), default=0) / mib,
        "peak_rss_during_load_mib": server.memory["load"].peak_process_rss / mib if "load" in server.memory else None,
        "vmhwm_mib": server.hwm_bytes / mib,
        "samples": sum(t.samples for t in server.memory.values()),
        "processes_in_tree": max((t.processes for t in server.memory.values()), default=0),
    }


def _flops(workload: Workload, samples: Samples, shape: ModelShape) -> float:
    """Useful FLOPs of the requests measured (same request sequence for every contender)."""
    n = len(workload.requests)
    per_request = [shape.flops(lengths) for lengths in workload.pair_lengths]
    # sequential: requests start..start+count; every contender saw the same indices, so mean is exact enough
    return sum(per_request) / n * samples.requests


def _latency_stats(samples: Samples, workload: Workload, shape: ModelShape, peak_flops: float) -> dict[str, Any]:
    lat = samples.latencies_s
    busy = sum(lat)
    tokens_per_s = samples.tokens / busy if busy else 0.0
    return {"n": len(lat), "p50_ms": percentile(lat, 50) * 1000, "p95_ms": percentile(lat, 95) * 1000,
            "mean_ms": busy / len(lat) * 1000 if lat else None, "min_ms": min(lat) * 1000 if lat else None,
            "max_ms": max(lat) * 1000 if lat else None, "tokens_per_s": tokens_per_s,
            "mfu": _flops(workload, samples, shape) / busy / peak_flops if busy else None,
            "idle_cpu_s_while_others_measured": samples.idle_cpu_s,
            "latencies_ms": [round(x * 1000, 2) for x in lat]}


def _burst_stats(samples: Samples, workload: Workload, shape: ModelShape, peak_flops: float) -> dict[str, Any]:
    lat = samples.latencies_s
    wall = samples.wall_s
    return {"n": samples.requests, "bursts": samples.bursts, "wall_s": wall,
            "throughput_rps": samples.requests / wall if wall else None,
            "tokens_per_s": samples.tokens / wall if wall else None,
            "docs_per_s": samples.requests * len(workload.requests[0].documents) / wall if wall else None,
            "p50_ms": percentile(lat, 50) * 1000, "p95_ms": percentile(lat, 95) * 1000,
            "mfu": _flops(workload, samples, shape) / wall / peak_flops if wall else None,
            "idle_cpu_s_while_others_measured": samples.idle_cpu_s,
            "latencies_ms": [round(x * 1000, 2) for x in lat]}


def _ratios(contenders: dict[str, Any]) -> None:
    """Each metric as a ratio to the seed-style server (a): latency ratios < 1 and throughput > 1 are better."""
    seed = contenders.get("seed")
    if not seed or seed.get("status") != "ok":
        return
    base = seed["workloads"]
    for entry in contenders.values():
        if entry.get("status") != "ok":
            continue
        ratios = {}
        for wk in ("W1", "W2"):
            for stat in ("p50_ms", "p95_ms"):
                ratios[f"{wk}_{stat[:3]}"] = entry["workloads"][wk][stat] / base[wk][stat]
        if base["W3"]["throughput_rps"]:
            ratios["W3_throughput"] = entry["workloads"]["W3"]["throughput_rps"] / base["W3"]["throughput_rps"]
        entry["ratio_vs_seed"] = ratios
