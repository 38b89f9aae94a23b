"""The two image flavours side by side, in their containers: `runtime` (torch) vs `runtime-onnx` (ONNX Runtime).

    python -m benchmarks.flavours [--torch-image TAG] [--onnx-image TAG] [--soak 60]

Default images: the newest `reranker-image-test:alibi-*` and `reranker-image-test:onnx-alibi-*`, which the image
tests build with the JinaBERT-shaped proxy (`pytest -m image tests/image`). Run under the shared lock; it takes
about 10 minutes. Writes `benchmarks/flavours.json` and re-renders `benchmarks/RESULTS.md` with its table.

What one run does (all traffic on 127.0.0.1):
 1. image sizes; each container started in turn, hardened (`--read-only --cap-drop ALL`, non-root), the slim
    one under `--memory 512m --memory-swap 512m` (the $7 plan), torch under 2 GB; cold start = `docker run`
    returned -> first 200 on /api/health/ (polled every 20 ms);
 2. warm-up, score agreement on the first W1 and W2 request (slim vs torch), the slim image's fidelity.json;
 3. W1, W2 (sequential calls) and W3 (bursts of 8 clients): rounds alternate the flavour order, only one
    container is busy at a time; torch at fp32 (RERANK_PRECISION=fp32), the slim one as it ships (auto);
 4. a soak per flavour: W1 requests from 2 concurrent clients (one worker's capacity: it is never idle) for
    `--soak` seconds, then the worker's peak RSS (VmHWM of the server process), the container's cgroup peak,
    whether it was OOM-killed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from benchmarks import fidelity
from benchmarks.containers import cgroup_peak_bytes, container_logs, worker_memory_kib
from benchmarks.loadgen import burst, call, percentile, sequential
from benchmarks.machine import cpu_info, cpu_label
from benchmarks.servers import BENCH_DIR, service_contender
from benchmarks.workloads import WorkloadSizes, build_workloads

FLAVOURS_JSON = BENCH_DIR / "flavours.json"
IMAGE_REPOSITORY = "reranker-image-test"
HARDENED = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
MEMORY = {"onnx": "512m", "torch": "2g"}


def docker(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}... failed: {result.stderr.strip()[-1000:]}")
    return result.stdout.strip()


def newest_image(prefix: str) -> str:
    rows = docker("image", "ls", "--format", "{{.CreatedAt}}\t{{.Repository}}:{{.Tag}}", IMAGE_REPOSITORY)
    tags = sorted((line.split("\t") for line in rows.splitlines() if line.split("\t")[1].split(":", 1)[1]
                   .startswith(prefix)), reverse=True)
    if not tags:
        raise SystemExit(f"no {IMAGE_REPOSITORY}:{prefix}* image: run `pytest -m image tests/image` first, "
                         "or pass --torch-image/--onnx-image")
    return tags[0][1]


@dataclass
class ContainerServer:
    """What benchmarks.loadgen needs from a server (contender, base_url), for a container."""

    flavour: str
    image: str
    name: str = ""
    port: int = 0
    cold_start_s: float | None = None

    def __post_init__(self) -> None:
        self.contender = service_contender(Path("/opt/reranker/model"))
        self.contender.key = self.flavour

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180) -> None:
        self.name = f"reranker-flavours-{self.flavour}-{uuid.uuid4().hex[:8]}"
        # published on 127.0.0.1 only: the explicit opt-out of production's credential requirement
        env = ["--env", "RERANK_ALLOW_ANONYMOUS=true"]
        env += ["--env", "RERANK_PRECISION=fp32"] if self.flavour == "torch" else []
        tmpfs = ["--tmpfs", "/tmp"] if self.flavour == "torch" else []
        docker("run", "--detach", "--name", self.name, "--memory", MEMORY[self.flavour],
               "--memory-swap", MEMORY[self.flavour], "--publish", "127.0.0.1::8000", *HARDENED, *tmpfs,
               *env, self.image)
        started = time.monotonic()
        while not self.port:
            ports = json.loads(docker("inspect", "--format", "{{json .NetworkSettings.Ports}}", self.name))
            binding = (ports or {}).get("8000/tcp")
            if binding:
                self.port = int(binding[0]["HostPort"])
            else:
                time.sleep(0.02)
        with httpx.Client(timeout=1) as client:
            while time.monotonic() - started < timeout_s:
                try:
                    if client.get(self.base_url + "/api/health/").status_code == 200:
                        self.cold_start_s = time.monotonic() - started
                        return
                except httpx.HTTPError:
                    if not json.loads(docker("inspect", "--format", "{{json .State.Running}}", self.name)):
                        raise RuntimeError(f"{self.flavour} exited before it was healthy:\n{container_logs(self.name)}") from None
                time.sleep(0.02)
        raise RuntimeError(f"{self.flavour} not healthy after {timeout_s}s:\n{container_logs(self.name)}")

    def info(self) -> dict[str, Any]:
        return httpx.get(self.base_url + "/info", timeout=10).json()

    def memory(self) -> dict[str, Any]:
        hwm_kib, _ = worker_memory_kib(self.name)
        peak = cgroup_peak_bytes(self.name)
        state = json.loads(docker("inspect", "--format", "{{json .State}}", self.name))
        return {"worker_peak_rss_mb": round(hwm_kib * 1024 / 1e6), "cgroup_peak_mb": round(peak / 1e6),
                "oom_killed": state["OOMKilled"], "running": state["Running"]}

    def stop(self) -> None:
        if self.name:
            subprocess.run(["docker", "rm", "--force", self.name], capture_output=True, timeout=60)


def soak(server: ContainerServer, workload, seconds: float, clients: int = 2) -> dict[str, Any]:
    answered: list[float] = []
    errors: list[str] = []
    end = time.monotonic() + seconds

    def loop(offset: int) -> None:
        i = offset
        with httpx.Client() as client:
            while time.monotonic() < end and not errors:
                t0 = time.perf_counter()
                try:
                    call(client, server, workload.request(i), 600)
                except Exception as exc:  # noqa: BLE001 - reported
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                answered.append(time.perf_counter() - t0)
                i += clients

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"seconds": seconds, "clients": clients, "requests": len(answered), "errors": errors[:3],
            "req_per_s": round(len(answered) / seconds, 3)}


def run(torch_image: str, onnx_image: str, soak_s: float, rounds: int, log=print) -> dict[str, Any]:
    started = time.time()
    w1, w2, w3 = build_workloads(WorkloadSizes())
    servers = [ContainerServer("torch", torch_image), ContainerServer("onnx", onnx_image)]
    out: dict[str, Any] = {"generated_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
                           "machine": cpu_info(), "load_at_start": os.getloadavg()[0], "flavours": {}}
    try:
        for server in servers:
            log(f"starting {server.flavour} ({server.image}, --memory {MEMORY[server.flavour]})...")
            server.start()
            log(f"  healthy after {server.cold_start_s:.2f} s")
            size = int(docker("image", "inspect", "--format", "{{.Size}}", server.image))
            out["flavours"][server.flavour] = {"image": server.image, "image_mb": round(size / 1e6),
                                               "memory_limit": MEMORY[server.flavour],
                                               "cold_start_s": round(server.cold_start_s, 2),
                                               "info": {k: server.info().get(k) for k in
                                                        ("flavour", "backend", "precision", "threads",
                                                         "load_seconds", "backend_reason")}}
        with httpx.Client() as client:
            for server in servers:
                call(client, server, w1.request(len(w1.requests) - 1), 600)
                call(client, server, w2.request(len(w2.requests) - 1), 600)
            agreement = {}
            for workload in (w1, w2):
                scores = {s.flavour: call(client, s, workload.request(0), 600) for s in servers}
                result = fidelity.compare(scores["torch"], scores["onnx"], "onnx")
                agreement[workload.key] = {"spearman": result.spearman, "max_abs_diff": result.max_abs_diff}
        out["agreement_onnx_vs_torch"] = agreement
        out["fidelity_json"] = json.loads(docker("exec", servers[1].name, "cat", "/opt/reranker/model/fidelity.json"))

        measured: dict[str, dict[str, list[float]]] = {s.flavour: {"W1": [], "W2": [], "W3": []} for s in servers}
        wall: dict[str, float] = {s.flavour: 0.0 for s in servers}
        answered: dict[str, int] = {s.flavour: 0 for s in servers}
        for r in range(rounds):
            order = servers if r % 2 == 0 else servers[::-1]
            for server in order:
                measured[server.flavour]["W1"] += sequential(server, w1, r * 2, 2, 600).latencies_s
            for server in order:
                measured[server.flavour]["W2"] += sequential(server, w2, r * 4, 4, 600).latencies_s
            for server in order:
                samples = burst(server, w3, r * w3.total_requests, 600)
                measured[server.flavour]["W3"] += samples.latencies_s
                wall[server.flavour] += samples.wall_s
                answered[server.flavour] += samples.requests
            log(f"  round {r + 1}/{rounds}: " + ", ".join(
                f"{s.flavour} W1 {statistics.median(measured[s.flavour]['W1']) * 1000:.0f} ms" for s in servers))
        for server in servers:
            entry = out["flavours"][server.flavour]
            entry["W1_p50_ms"] = round(percentile(measured[server.flavour]["W1"], 50) * 1000)
            entry["W1_p95_ms"] = round(percentile(measured[server.flavour]["W1"], 95) * 1000)
            entry["W2_p50_ms"] = round(percentile(measured[server.flavour]["W2"], 50) * 1000)
            entry["W2_p95_ms"] = round(percentile(measured[server.flavour]["W2"], 95) * 1000)
            entry["W3_req_per_s"] = round(answered[server.flavour] / wall[server.flavour], 2)
            entry["W3_p50_ms"] = round(percentile(measured[server.flavour]["W3"], 50) * 1000)
        for server in servers:
            log(f"soak {server.flavour}: {soak_s:.0f} s of W1 from 2 clients...")
            out["flavours"][server.flavour]["soak"] = soak(server, w1, soak_s)
            out["flavours"][server.flavour]["memory_after_soak"] = server.memory()
            log(f"  {out['flavours'][server.flavour]['memory_after_soak']}")
    finally:
        for server in servers:
            server.stop()
    torch_entry, onnx_entry = out["flavours"]["torch"], out["flavours"]["onnx"]
    out["ratios_onnx_vs_torch"] = {
        "W1_p50": round(onnx_entry["W1_p50_ms"] / torch_entry["W1_p50_ms"], 3),
        "W2_p50": round(onnx_entry["W2_p50_ms"] / torch_entry["W2_p50_ms"], 3),
        "W3_throughput": round(onnx_entry["W3_req_per_s"] / torch_entry["W3_req_per_s"], 3),
    }
    out["load_at_end"] = os.getloadavg()[0]
    out["duration_s"] = round(time.time() - started)
    out["settings"] = {"rounds": rounds, "soak_s": soak_s, "w3_clients": w3.concurrency,
                       "w3_requests_per_burst": w3.total_requests}
    return out


def markdown(data: dict[str, Any]) -> str:
    """The flavour table of RESULTS.md."""
    t, o = data["flavours"]["torch"], data["flavours"]["onnx"]
    ratio = data["ratios_onnx_vs_torch"]
    f = data["fidelity_json"]["options"]
    agree = data["agreement_onnx_vs_torch"]
    m = data["machine"]
    soak_s = data["settings"]["soak_s"]

    def row(name: str, e: dict[str, Any], fid: str) -> str:
        mem = e["memory_after_soak"]
        return (f"| {name} | {e['image_mb']} MB | {e['memory_limit']} | {mem['worker_peak_rss_mb']} MB | "
                f"{mem['cgroup_peak_mb']} MB | {'yes' if mem['oom_killed'] else 'no'} | {e['cold_start_s']:.2f} s | "
                f"{e['W1_p50_ms']:,} ms | {e['W2_p50_ms']:,} ms | {e['W3_req_per_s']:.2f} req/s | {fid} |")

    int8 = f.get("onnx-int8", {})
    lines = [
        "## Image flavours: `runtime` (torch) vs `runtime-onnx` (ONNX Runtime)\n",
        f"Generated by `python -m benchmarks.flavours` on {data['generated_at']} ({data['duration_s']} s); raw "
        f"numbers in [`flavours.json`](flavours.json). Both images built by the image tests with the JinaBERT-shaped "
        f"proxy; measured on {cpu_label(m)}. Containers hardened "
        "(`--read-only --cap-drop ALL`, non-root), one worker each, measured alternately on 127.0.0.1. "
        f"Peak RSS after a {soak_s:.0f} s soak of W1 requests from 2 concurrent clients (the worker never idles).\n",
        "| flavour | image | memory limit | worker peak RSS | container peak (incl. page cache) | OOM-killed | "
        "cold start | W1 p50 | W2 p50 | W3 throughput | fidelity vs torch fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        row("torch (`runtime`, fp32)", t, "reference"),
        row(f"onnx (`runtime-onnx`, {o['info']['precision']})", o,
            f"onnx-fp32 passed: Spearman {f['onnx-fp32']['spearman']}, top-10 {f['onnx-fp32']['top10_overlap']}, "
            f"max diff {f['onnx-fp32']['max_abs_diff']:.1e}"),
        "",
        f"ONNX / torch in the same run: W1 p50 **{ratio['W1_p50']:.2f}x**, W2 p50 **{ratio['W2_p50']:.2f}x** "
        f"(lower is better), W3 throughput **{ratio['W3_throughput']:.2f}x** (higher is better). "
        f"Served scores, slim vs torch image: W1 Spearman {agree['W1']['spearman']:.6f}, max diff "
        f"{agree['W1']['max_abs_diff']:.1e}; W2 Spearman {agree['W2']['spearman']:.6f}, max diff "
        f"{agree['W2']['max_abs_diff']:.1e}. int8: "
        + (f"{'passed' if int8.get('passed') else 'failed'} the gate on this model (Spearman {int8.get('spearman')}, "
           f"max diff {int8.get('max_abs_diff')}), so it is {'shipped' if int8.get('passed') else 'not shipped'}."
           if int8 else "not tried.")
        + f" Load average {data['load_at_start']:.2f} at start, {data['load_at_end']:.2f} at the end.\n",
    ]
    return "\n".join(lines) + "\n"


def flavours_section(path: Path = FLAVOURS_JSON) -> str:
    """RESULTS.md's flavour table from flavours.json ("" before the first run)."""
    if not path.is_file():
        return ""
    return markdown(json.loads(path.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flavours", description=__doc__.splitlines()[0])
    parser.add_argument("--torch-image")
    parser.add_argument("--onnx-image")
    parser.add_argument("--soak", type=float, default=60.0, help="soak seconds per flavour (default 60)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=FLAVOURS_JSON)
    args = parser.parse_args(argv)
    torch_image = args.torch_image or newest_image("alibi-")
    onnx_image = args.onnx_image or newest_image("onnx-alibi-")
    data = run(torch_image, onnx_image, args.soak, args.rounds, log=lambda m: print(m, flush=True))
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    from benchmarks import report

    results_json = BENCH_DIR / "results.json"
    if args.out == FLAVOURS_JSON and results_json.is_file():
        report.write(json.loads(results_json.read_text()), BENCH_DIR)
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
