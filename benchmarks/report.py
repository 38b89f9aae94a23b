"""results.json (raw numbers) and RESULTS.md (the table and the context) from one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.machine import cpu_generation, has_amx

# Issue 9's targets, checked (not enforced) in the report: per service variant, ratios to the seed server.
TARGETS = {
    "fp32": {"W1_p50": 0.45, "W2_p50": 0.8, "W3_throughput": 1.25},
    "bf16": {"W1_p50": 0.25, "W2_p50": 0.35, "W3_throughput": 2.5},
    "rss_mib": 600.0 * 1000 * 1000 / 2**20,  # "600 MB" per worker
    "cold_start_s": 5.0,
}
SERVICE_KEYS = ("service", "service-remote", "service-config", "service-bf16")

TABLE_COLUMNS = ["contender", "W1 p50", "W1 p95", "W2 p50", "W2 p95", "W3 throughput", "W3 p50",
                 "tokens/s W1 · W2 · W3", "MFU W1 · W2 · W3", "peak RSS/worker serving", "peak RSS incl. load",
                 "cold start"]

NOTE_PROXY = ("The proxy is a JinaBERT-shaped model with **random weights** (normal(0, 0.1) init, built by "
              "`tests/support/model_factory.py`), with remote code like the real model's: (c1) and (c2) run that code "
              "through transformers; (c) and (c3) run the service's native implementation, which the image build's "
              "check (`service/native_gate.py`) also passed on this proxy. Its speed is "
              "the real model's (same shapes, same code paths); its scores are meaningless, and reduced-precision "
              "fidelity measured on it is not the real model's (random weights amplify rounding).")


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    md_path = out_dir / "RESULTS.md"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=False, default=str) + "\n")
    from benchmarks.chart import write_chart

    results["chart"] = write_chart(results, out_dir) is not None
    for key in ("soak", "gate"):  # python -m benchmarks.soak / benchmarks.gate_report, run before
        extra = out_dir / f"{key}.json"
        if extra.is_file():
            results[key] = json.loads(extra.read_text())
    md_path.write_text(render(results))
    return json_path, md_path


def _measured_on(cpus: set[str | None]) -> str:
    """The sentence naming the CPU of a section run apart from the benchmark (soak, gate): it may be another
    machine than the one under "Machine and versions"."""
    named = sorted(cpu for cpu in cpus if cpu)
    return f" Measured on {' and '.join(named)}." if named else " The CPU it ran on was not recorded."


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def _x(value: float | None) -> str:
    return "" if value is None else f" ({value:.2f}x)"


def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "–" if value is None else fmt.format(value)


def _rss_with_file(mem: dict[str, Any]) -> str:
    """The serving peak and its file-backed part, e.g. `480 MiB (118 file)` (older results have no file part)."""
    total = _num(mem["peak_rss_per_worker_serving_mib"], "{:,.0f} MiB")
    file_backed = mem.get("peak_rss_per_worker_serving_file_mib")
    return total if file_backed is None else f"{total} ({file_backed:,.0f} file)"


def _cold_start(entry: dict[str, Any]) -> str:
    """The median cold start and, when there were several starts, their range: `2.4 s (2.3-7.4)`."""
    median = _num(entry["cold_start_s"], "{:.1f} s")
    runs = entry.get("cold_start_runs_s") or []
    return f"{median} ({min(runs):.1f}-{max(runs):.1f})" if len(runs) > 1 else median


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for entry in results["contenders"].values():
        if entry.get("status") != "ok":
            rows.append([entry["label"], *(["not measured"] + [""] * (len(TABLE_COLUMNS) - 2))])
            continue
        w = entry["workloads"]
        r = entry.get("ratio_vs_seed", {})
        mem = entry["memory"]
        rows.append([
            entry["label"],
            _ms(w["W1"]["p50_ms"]) + _x(r.get("W1_p50")),
            _ms(w["W1"]["p95_ms"]) + _x(r.get("W1_p95")),
            _ms(w["W2"]["p50_ms"]) + _x(r.get("W2_p50")),
            _ms(w["W2"]["p95_ms"]) + _x(r.get("W2_p95")),
            _num(w["W3"]["throughput_rps"], "{:.2f} req/s") + _x(r.get("W3_throughput")),
            _ms(w["W3"]["p50_ms"]),
            " · ".join(_num(w[k]["tokens_per_s"]) for k in ("W1", "W2", "W3")),
            " · ".join(_num(w[k]["mfu"] * 100 if w[k]["mfu"] is not None else None, "{:.0f}%")
                       for k in ("W1", "W2", "W3")) + f" ({entry['dtype_for_mfu']})",
            _rss_with_file(mem),
            _num(mem["vmhwm_mib"], "{:,.0f} MiB"),
            _cold_start(entry),
        ])
    return rows


def _targets(results: dict[str, Any]) -> list[str]:
    contenders = results["contenders"]
    lines = []

    def check(name: str, value: float | None, ok: bool | None, goal: str) -> None:
        mark = "–" if ok is None else ("met" if ok else "**not met**")
        shown = "–" if value is None else f"{value:.2f}"
        lines.append(f"| {name} | {goal} | {shown} | {mark} |")

    for key in SERVICE_KEYS:
        service = contenders.get(key)
        if not service or service.get("status") != "ok":
            continue
        goals = TARGETS["bf16" if service.get("dtype_for_mfu") == "bf16" else "fp32"]
        ratios = service.get("ratio_vs_seed", {})
        label = service["label"]
        for metric, text, better in (("W1_p50", "W1 p50 latency", "<="), ("W2_p50", "W2 p50 latency", "<="),
                                     ("W3_throughput", "W3 throughput", ">=")):
            value = ratios.get(metric)
            ok = None if value is None else (value <= goals[metric] if better == "<=" else value >= goals[metric])
            check(f"{label}: {text} vs (a)", value, ok, f"{better} {goals[metric]}x")
        rss = service["memory"]["peak_rss_per_worker_serving_mib"]
        check(f"{label}: peak RSS per worker serving (MiB)", rss,
              None if rss is None else rss <= TARGETS["rss_mib"], "<= 600 MB (572 MiB)")
        cold = service["cold_start_s"]
        check(f"{label}: cold start to healthy (s)", cold, cold <= TARGETS["cold_start_s"], "<= 5 s")
    if not lines:
        return ["(this service was not measured in this run)"]
    return ["| target | goal | measured | |", "|---|---|---|---|", *lines]


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    v = results["versions"]
    model = results["model"]
    peaks = results["matmul_peak"]
    plan = results["settings"]["plan"]
    load = results["load"]
    out: list[str] = []
    add = out.append
    add("# Benchmark results: seed-style server vs Infinity vs this service\n")
    add(f"Generated by `{results['command'] or 'python -m benchmarks'}` on {results['generated_at']} "
        f"({results['duration_s']:.0f} s). **Do not edit by hand**: `make bench` (or `python -m benchmarks`) "
        "regenerates this file and the raw numbers in [`results.json`](results.json).\n")
    add(f"Model: **{model['label']}** (`{Path(model['path']).name}`). " + (NOTE_PROXY if "proxy" in model["label"]
                                                                            else "") + "\n")
    add("## Results\n")
    add("Latency ratios are contender / seed-style server (lower is better); the throughput ratio is "
        "contender / seed-style server (higher is better). tokens/s counts real tokens (the model's "
        "tokenizer, each pair truncated at "
        f"{results['settings']['max_length_for_token_counts']}) answered per second (W1, W2: summed over the "
        "sequential calls' latencies; W3: over the bursts' wall time); MFU = model FLOPs of those tokens per "
        "second / the measured matmul peak of the dtype the contender computes in (fp32 unless its /info says "
        "bf16). Peak RSS is per worker process.\n")
    add("| " + " | ".join(TABLE_COLUMNS) + " |")
    add("|" + "---|" * len(TABLE_COLUMNS))
    for row in table_rows(results):
        add("| " + " | ".join(row) + " |")
    add("")
    if results.get("chart"):
        add("![latency, throughput and memory per contender](chart.png)\n")
    add("### Issue 9 targets (this service, per variant)\n")
    out.extend(_targets(results))
    add("")
    if results.get("soak"):
        from benchmarks.soak import failure_summary

        add("### Memory soak (per-worker figure for infra/sizing.py, per precision)\n")
        add("`python -m benchmarks.soak`: capacity measured first (W2-shaped requests, 8 clients, 10 s), then "
            "mixed traffic (1 W1-shaped 100-document request per 4 W2-shaped ones, 8 clients) paced at that "
            "rate. Peak = VmHWM of the worker process, load included; in an image also the container's cgroup "
            "peak (page cache included)."
            + _measured_on({r.get("cpu") for r in results["soak"]}) + "\n")
        add("| precision | where | capacity (W2 req/s) | mixed requests / s | failed | peak RSS per worker | "
            "RSS at the end | container peak | error |")
        add("|---|---|---|---|---|---|---|---|---|")
        for r in results["soak"]:
            container = f"{r['container_peak_mib']:,.0f} MiB" if r.get("container_peak_mib") else "–"
            reasons = failure_summary(r.get("failure_reasons") or {})
            add(f"| {r['precision']} | {r['where']} | {r['capacity_rps']:.2f} | {r['requests']} / {r['seconds']} | "
                f"{r['failures']}{f' ({reasons})' if reasons else ''} | {r['peak_rss_mib']:,.0f} MiB | {r['end_rss_mib']:,.0f} MiB | {container} | "
                f"{r['error'] or ''} |")
        add("")
    if results.get("gate"):
        add("### Precision gate (`python -m benchmarks.gate_report`)\n")
        add("The verdict `service/fidelity_gate.py` takes (512 calibration pairs, bf16 with converted weights "
            "vs fp32): Spearman >= 0.999, mean top-10 overlap >= 0.98, max |score difference| <= 0.01."
            + _measured_on({results["gate"].get("cpu")}) + "\n")
        add("| model | option | Spearman | top-10 overlap | max abs diff | mean abs diff | speed vs fp32 | verdict |")
        add("|---|---|---|---|---|---|---|---|")
        for label, verdict in results["gate"]["verdicts"].items():
            for option, e in verdict["options"].items():
                if option == verdict.get("reference"):
                    continue
                add(f"| {label} | {option} | {e.get('spearman', float('nan')):.5f} | "
                    f"{e.get('top10_overlap', float('nan')):.3f} | {e.get('max_abs_diff', float('nan')):.2e} | "
                    f"{e.get('mean_abs_diff', float('nan')):.2e} | {e.get('speedup_vs_reference') or 0:.2f}x | "
                    f"{'pass' if e.get('passed') else 'FAIL'} |")
        add("")
    failures = {k: e for k, e in results["contenders"].items() if e.get("status") != "ok"}
    inf_install = results.get("infinity_install")
    if failures or (inf_install and not inf_install.get("ok")):
        add("### Contenders that could not be measured\n")
        for key, entry in failures.items():
            add(f"- **{entry['label']}**: {entry['error'].splitlines()[0]}")
            add("\n```\n" + entry["error"][-3000:] + "\n```")
        if inf_install and not inf_install.get("ok") and "infinity" not in failures:
            add(f"- **(b) Infinity** did not install: ```{inf_install['detail'][-3000:]}```")
        add("")
    agreement = {k: e.get("agreement_vs_seed") for k, e in results["contenders"].items()
                 if e.get("agreement_vs_seed")}
    if agreement:
        add("### Score agreement with the seed-style server (first request of W1 and W2)\n")
        add("| contender | W1 Spearman | W1 max abs diff | W2 Spearman | W2 max abs diff |")
        add("|---|---|---|---|---|")
        for key, agr in agreement.items():
            label = results["contenders"][key]["label"]
            add(f"| {label} | {agr['W1']['spearman']:.6f} | {agr['W1']['max_abs_diff']:.2e} | "
                f"{agr['W2']['spearman']:.6f} | {agr['W2']['max_abs_diff']:.2e} |")
        add("")

    add("## How it was measured\n")
    add("- Each contender is its own server process on a free 127.0.0.1 port, started one at a time "
        "(cold start = process start to the first 200 on its health route: `/api/health/` for (a) and (c), "
        "`/health` for Infinity). All stay up for the whole run; only one is sent traffic at a time.")
    starts = plan.get("cold_starts", 1)
    if starts > 1:
        add(f"- Cold start: the median of {starts} starts per contender, in brackets their range: the measured "
            f"server's own start, then {starts - 1} more after the run, each server started alone and stopped "
            "once healthy (a single start is a noisy sample).")
    add(f"- Warm-up: 1 W1 call and {plan['warmup_calls']} W2 calls per contender, not measured.")
    add(f"- W1 and W2: {plan['w1_rounds']} and {plan['w2_rounds']} rounds of {plan['w1_block']} and "
        f"{plan['w2_block']} sequential calls per contender; the contender order rotates every round, so "
        "background noise hits all of them alike. W3: "
        f"{plan['w3_rounds']} rounds of one burst per contender, rotated the same way; throughput = requests "
        "answered / wall time of the bursts.")
    add("- Every response is checked (HTTP 200, one score per document). Requests come from a fixed-seed "
        "pool of distinct requests; every contender gets the same requests in the same order.")
    add("- Memory: RSS of each server's process tree sampled every 50 ms (psutil); \"per worker\" is the "
        "largest single process; in brackets, the file-backed part of it in the same sample (psutil's `shared`: "
        "the code of the shared libraries and the pages of the mapped model file the process touched), which "
        "the kernel can drop and re-read, and which tells a change of the process's own memory from one of its "
        "file pages. \"incl. load\" is the kernel's high-water mark (VmHWM), which catches the "
        "model-loading spike that sampling can miss.")
    service_python = results["settings"].get("service_python")
    if service_python:
        from benchmarks.servers import SERVICE_VENV

        add("- This service's interpreter: "
            + ("its own venv, requirements/service.txt only, as the image installs it "
               "(`benchmarks/service_env.py`)." if SERVICE_VENV.name in Path(service_python).parts else
               "the harness's, not the service's own venv: packages no image has (scikit-learn, SciPy) are "
               "imported and its memory reads high (`--service-python venv` measures it as deployed)."))
    add(f"- Machine load: 1-minute load average {load['at_start']:.2f} at start, "
        f"{load.get('before_timing', float('nan')):.2f} before timing, {load.get('after_timing', float('nan')):.2f}"
        f" after (waited {load['waited_s']:.0f} s for < {load['threshold']})"
        + ("" if load.get("quiet") else "; **the machine was not quiet: treat the absolute numbers with care**")
        + ".\n")
    add("### Workloads (fixed seed, English-like text)\n")
    add("| workload | description | distinct requests | mean tokens / request | mean tokens / pair | "
        "max tokens / pair |")
    add("|---|---|---|---|---|---|")
    for key, w in results["workloads"].items():
        add(f"| {key} | {w['description']} | {w['distinct_requests']} | {w['mean_tokens_per_request']:,.0f} | "
            f"{w['mean_tokens_per_pair']:.0f} | {w['max_tokens_per_pair']} |")
    add("")
    add("### Contenders\n")
    for key, entry in results["contenders"].items():
        env = " ".join(f"{k}={v}" for k, v in entry.get("env", {}).items())
        add(f"- **{entry['label']}**: `{(env + ' ') if env else ''}{entry['command']}`")
        if entry.get("info"):
            add(f"  - reported: `{json.dumps(entry['info'], default=str)[:600]}`")
    add("")
    add("### Model and FLOPs\n")
    s = model["shape"]
    add(f"- {s['layers']} layers, hidden {s['hidden']}, {s['heads']} heads, intermediate {s['intermediate']} "
        f"({'GEGLU' if s['gated_ffn'] else 'plain'} feed-forward), vocab {s['vocab']:,}, "
        f"{s['position_embedding_type']} positions (max_position_embeddings {s['max_position_embeddings']:,}); "
        f"{model['parameters'] / 1e6:.1f} M parameters.")
    add("- FLOPs per token (2 per multiply-add): per layer 8h² (Q, K, V, output projections) + "
        "6·h·i (GEGLU: up to 2i, down from i; a plain MLP is 4·h·i) + 4·L·h (QKᵀ and AV, L = sequence length); "
        f"{model['flops_per_token_at_mean_W1_pair'] / 1e6:.1f} MFLOP/token at W1's mean pair length, "
        f"{model['flops_per_token_at_mean_W2_pair'] / 1e6:.1f} at W2's. Padding is not counted (useful work "
        "only).")
    add("- Matmul peak in the harness process (torch, square " + str(peaks['fp32']['n']) + ", "
        f"{peaks['fp32']['threads']} threads, the faster of aten's mm and oneDNN's packed Linear): "
        f"fp32 **{peaks['fp32']['gflops']:.0f} GFLOP/s** ({peaks['fp32'].get('path', 'aten mm')}), "
        f"bf16 **{peaks['bf16']['gflops']:.0f} GFLOP/s** ({peaks['bf16'].get('path', 'aten mm')}) (best of a "
        "measurement before the servers start and one after they stop).\n")
    add("In-process micro-experiments (attention path, bf16, threads, padding) and the profile of the seed "
        "path are in [`EXPERIMENTS.md`](EXPERIMENTS.md) (`python -m benchmarks.experiments`); score fidelity "
        "of precision/backend options: `python -m benchmarks.fidelity`.\n")
    from benchmarks.flavours import flavours_section

    if section := flavours_section():
        add(section)
    add("## Machine and versions\n")
    generation = cpu_generation(m)
    add(f"- CPU: **{m.get('model')}** ({m.get('vendor')}{', ' + generation if generation else ''}), "
        f"{m.get('cores_online')} CPUs "
        f"({m.get('threads_per_core')} thread(s) per core), L2 {m.get('l2')}, L3 {m.get('l3')}, "
        f"hypervisor {m.get('hypervisor') or 'none'}, {m.get('memory_gib')} GiB memory; {m.get('platform')}.")
    add(f"- Matmul-relevant flags: `{' '.join(m.get('matmul_flags', []))}`; "
        f"AMX: {'yes' if has_amx(m) else 'no'}; "
        f"torch CPU capability: {v.get('torch cpu capability')}.")
    add("- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val and k not in (
        "torch cpu capability", "torch threads")) + ".")
    add("\n<details><summary>All CPU flags (lscpu)</summary>\n")
    add("`" + m.get("flags", "") + "`\n")
    add("</details>\n")
    if inf_install:
        add("### Infinity install\n")
        add(f"`{inf_install['requirement']}` in `{Path(inf_install['venv']).name}` (own venv under "
            f"benchmarks/.work/, constraints in `benchmarks/infinity-constraints.txt`): "
            f"{'OK' if inf_install['ok'] else 'FAILED'}: {inf_install['detail'].splitlines()[0]}\n")
    return "\n".join(out) + "\n"
