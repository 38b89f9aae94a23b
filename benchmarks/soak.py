"""Memory soak: the per-worker figure for infra/sizing.py, per precision.

    python -m benchmarks.soak [--image TAG --memory 1g] [--precision fp32 --precision bf16] [--seconds 60]

For each precision: start the service (in the image under a memory limit with --image, else a host process),
measure its capacity (W2-shaped requests/s at 8 concurrent clients, 10 s), then drive it for `--seconds` at
that rate with mixed traffic (one W1-shaped 100-document request for every four W2-shaped ones, 8 clients),
and report the worker's peak RSS (VmHWM of the largest process, which includes the load), its RSS at the end,
and with --image the container's own peak (cgroup memory.peak, page cache included). Every response is
checked; an OOM kill or a failed request is reported as such. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from benchmarks import service_env
from benchmarks.containers import cgroup_peak_bytes, container_logs, worker_memory_kib
from benchmarks.machine import cpu_label
from benchmarks.servers import PROJECT_ROOT, WORK_DIR, ServerProcess, free_port, service_contender
from benchmarks.workloads import WorkloadSizes, build_workloads

MIB = 1024 * 1024


@dataclass
class SoakResult:
    precision: str
    where: str
    capacity_rps: float = 0.0
    target_rps: float = 0.0
    requests: int = 0
    failures: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)  # "429", "503", "transport", "wrong answer"
    seconds: float = 0.0
    peak_rss_mib: float = 0.0  # VmHWM of the worker process
    end_rss_mib: float = 0.0
    container_peak_mib: float | None = None  # image only: the cgroup's peak, page cache included
    rss_timeline_mib: list[float] = field(default_factory=list)
    info: dict[str, Any] | None = None
    error: str | None = None
    cpu: str = ""  # benchmarks.machine.cpu_label(): the soak runs apart from the benchmark, maybe elsewhere


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class HostTarget:
    def __init__(self, model_path: Path, env: dict[str, str], python: str) -> None:
        self.server = ServerProcess(service_contender(model_path, env, python=python), WORK_DIR / "logs-soak")

    def start(self) -> tuple[str, dict[str, Any] | None]:
        self.server.start()
        if not self.server.wait_healthy(300):
            raise RuntimeError(self.server.error)
        return self.server.base_url, self.server.info

    def worker_pid(self) -> int:
        tree = self.server.tree()
        return max(tree, key=lambda p: p.memory_info().rss).pid if tree else 0

    def rss(self) -> tuple[float, float]:
        pid = self.worker_pid()
        return _status_kib(pid, "VmRSS") / 1024, _status_kib(pid, "VmHWM") / 1024

    def stop(self) -> None:
        self.server.stop()


class ImageTarget:
    """`docker run --memory LIMIT --memory-swap LIMIT` of the image, published on 127.0.0.1 only."""

    def __init__(self, image: str, memory: str, env: dict[str, str]) -> None:
        self.image, self.memory, self.env = image, memory, env
        self.name = f"reranker-soak-{int(time.time())}"
        self.port = free_port()

    def start(self) -> tuple[str, dict[str, Any] | None]:
        # published on 127.0.0.1 only: the explicit opt-out of production's credential requirement
        args = ["docker", "run", "-d", "--name", self.name, "--memory", self.memory, "--memory-swap", self.memory,
                "-p", f"127.0.0.1:{self.port}:8000", "-e", "RERANK_ALLOW_ANONYMOUS=true"]
        for key, value in self.env.items():
            args += ["-e", f"{key}={value}"]
        subprocess.run([*args, self.image], check=True, capture_output=True, text=True, timeout=60)
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                try:
                    if client.get(url + "/api/health/").status_code == 200:
                        info = client.get(url + "/info")
                        return url, info.json() if info.status_code == 200 else None
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"{self.image} not healthy after 300 s: " + container_logs(self.name))

    def rss(self) -> tuple[float, float]:
        """(current, peak) RSS of the worker, the container's largest process (VmRSS / VmHWM), in MiB."""
        peak_kib, current_kib = worker_memory_kib(self.name)
        return current_kib / 1024, peak_kib / 1024

    def container_peak(self) -> float:
        """The container's own peak, page cache included, in MiB."""
        return cgroup_peak_bytes(self.name) / MIB

    def oom_killed(self) -> bool:
        out = subprocess.run(["docker", "inspect", "-f", "{{.State.OOMKilled}}", self.name], capture_output=True,
                             text=True, timeout=30).stdout.strip()
        return out == "true"

    def stop(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, timeout=60)


def _body(request) -> dict[str, Any]:
    return {"query": request.query, "documents": list(request.documents), "return_documents": False}


def _drive(url: str, requests: list, *, rate: float | None, seconds: float,
           clients: int) -> tuple[int, Counter, float]:
    """`clients` threads send `requests` round-robin for `seconds`, paced to `rate` req/s in all (None: as fast
    as answered). Returns (answered, why the others failed with how many each, wall seconds)."""
    lock = threading.Lock()
    state = {"next": 0, "ok": 0}
    reasons: Counter = Counter()
    started = time.monotonic()
    interval = clients / rate if rate else 0.0

    def loop() -> None:
        with httpx.Client(timeout=300) as client:
            while time.monotonic() - started < seconds:
                begun = time.monotonic()
                with lock:
                    index = state["next"]
                    state["next"] += 1
                request = requests[index % len(requests)]
                try:
                    response = client.post(url + "/v1/rerank", json=_body(request))
                    if response.status_code != 200:
                        reason = str(response.status_code)
                    elif len(response.json()["results"]) != len(request.documents):
                        reason = "wrong answer"
                    else:
                        reason = None
                except httpx.HTTPError as exc:
                    reason = f"transport ({type(exc).__name__})"
                with lock:
                    if reason:
                        reasons[reason] += 1
                    else:
                        state["ok"] += 1
                pause = interval - (time.monotonic() - begun)
                if pause > 0:
                    time.sleep(pause)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return state["ok"], reasons, time.monotonic() - started


def soak_one(target, precision: str, where: str, seconds: float, clients: int = 8) -> SoakResult:
    result = SoakResult(precision, where, cpu=cpu_label())
    w1, w2, _ = build_workloads(WorkloadSizes())
    mixed = []
    for i in range(len(w2.requests) * 2):
        mixed.append(w1.request(i) if i % 5 == 4 else w2.request(i))
    try:
        url, result.info = target.start()
        ok, _, wall = _drive(url, w2.requests, rate=None, seconds=10, clients=clients)
        result.capacity_rps = ok / wall if wall else 0.0
        # Mixed traffic costs more per request than W2 alone: pace at the W2 capacity, the clients saturate.
        result.target_rps = result.capacity_rps
        timeline: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                timeline.append(round(target.rss()[0], 1))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        ok, reasons, wall = _drive(url, mixed, rate=result.target_rps, seconds=seconds, clients=clients)
        result.failure_reasons = dict(reasons)
        stop.set()
        sampler.join()
        result.requests, result.failures, result.seconds = ok, sum(reasons.values()), round(wall, 1)
        current, peak = target.rss()
        result.end_rss_mib, result.peak_rss_mib = round(current, 1), round(peak, 1)
        result.rss_timeline_mib = timeline
        if isinstance(target, ImageTarget):
            result.container_peak_mib = round(target.container_peak(), 1)
            if target.oom_killed():
                result.error = "OOM-killed under the memory limit"
    except Exception as exc:  # noqa: BLE001 - reported
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        target.stop()
    return result


def failure_summary(reasons: dict[str, int]) -> str:
    """"2 x 429, 1 x transport (ReadTimeout)": why soak requests failed (also in benchmarks/RESULTS.md)."""
    return ", ".join(f"{n} x {why}" for why, n in reasons.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", type=Path, help="model folder (host runs; default: the JinaBERT proxy)")
    parser.add_argument("--image", help="run the service image (its baked-in model) instead of a host process")
    parser.add_argument("--memory", default="1g", help="container memory limit with --image (default 1g)")
    parser.add_argument("--precision", action="append", choices=["fp32", "bf16", "auto"],
                        help="repeatable (default: fp32 and bf16)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--json", type=Path, default=WORK_DIR / "soak.json")
    service_env.add_argument(parser)
    args = parser.parse_args(argv)
    precisions = args.precision or ["fp32", "bf16"]
    if not args.image and args.model_path is None:
        from tests.support.model_factory import JINA_TINY_DIMS, cached_model

        args.model_path = cached_model("alibi", WORK_DIR / "models", **JINA_TINY_DIMS).resolve()
    python = None if args.image else service_env.resolve(args.service_python)
    results = []
    for precision in precisions:
        env = {"RERANK_PRECISION": precision, "LOG_LEVEL": "warning"}
        if args.image:
            target, where = ImageTarget(args.image, args.memory, env), f"image {args.image}, --memory {args.memory}"
        else:
            target, where = HostTarget(args.model_path, env, python), f"host process, {args.model_path.name}"
        result = soak_one(target, precision, where, args.seconds)
        results.append(result)
        why = f": {failure_summary(result.failure_reasons)}" if result.failures else ""
        print(f"{precision:>5} [{where}]: capacity {result.capacity_rps:.2f} req/s (W2), {result.requests} mixed "
              f"requests in {result.seconds} s ({result.failures} failed{why}); peak RSS per worker "
              f"{result.peak_rss_mib:,.0f} MiB, at the end {result.end_rss_mib:,.0f} MiB"
              + (f"; ERROR {result.error}" if result.error else ""), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2, default=str) + "\n")
    print(f"wrote {args.json.relative_to(PROJECT_ROOT) if args.json.is_relative_to(PROJECT_ROOT) else args.json}")
    return 1 if any(r.error or r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
