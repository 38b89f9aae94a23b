"""Load generation against one server on 127.0.0.1: sequential calls (latency) and a bounded burst of
concurrent clients (throughput). Every response is checked: status 200 and one score per document."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import httpx

from benchmarks.servers import ServerProcess
from benchmarks.workloads import Request, Workload


class BenchmarkError(RuntimeError):
    pass


@dataclass
class Samples:
    latencies_s: list[float] = field(default_factory=list)
    tokens: int = 0
    requests: int = 0
    wall_s: float = 0.0  # bursts only: summed wall time of the bursts
    bursts: int = 0
    idle_cpu_s: float = 0.0  # CPU this server burnt while the *other* contenders were measured

    def extend(self, other: Samples) -> None:
        self.latencies_s += other.latencies_s
        self.tokens += other.tokens
        self.requests += other.requests
        self.wall_s += other.wall_s
        self.bursts += other.bursts


def call(client: httpx.Client, server: ServerProcess, request: Request, timeout_s: float) -> list[float]:
    contender = server.contender
    response = client.post(server.base_url + contender.rerank_path,
                           json=contender.body(request.query, list(request.documents)), timeout=timeout_s)
    if response.status_code != 200:
        raise BenchmarkError(f"{contender.key}: HTTP {response.status_code}: {response.text[:300]}")
    scores = contender.parse(response.json(), len(request.documents))
    if len(scores) != len(request.documents) or any(math.isnan(s) for s in scores):
        raise BenchmarkError(f"{contender.key}: expected {len(request.documents)} scores, got {scores[:5]}...")
    return scores


def sequential(server: ServerProcess, workload: Workload, start: int, count: int,
               timeout_s: float = 300.0) -> Samples:
    """`count` calls one after another, requests `start`..`start+count-1` of the workload's pool."""
    samples = Samples()
    with httpx.Client() as client:
        for i in range(start, start + count):
            request = workload.request(i)
            t0 = time.perf_counter()
            call(client, server, request, timeout_s)
            samples.latencies_s.append(time.perf_counter() - t0)
            samples.tokens += workload.tokens[i % len(workload.requests)] if workload.tokens else 0
            samples.requests += 1
    return samples


def burst(server: ServerProcess, workload: Workload, start: int, timeout_s: float = 300.0) -> Samples:
    """`workload.concurrency` clients share `workload.total_requests` requests; wall time from the first
    send to the last answer. Bounded in count (and in time by `timeout_s` per request)."""
    next_index = start
    lock = threading.Lock()
    latencies: list[float] = []
    tokens = 0
    errors: list[BaseException] = []
    end = start + workload.total_requests
    barrier = threading.Barrier(workload.concurrency + 1)

    def client_loop() -> None:
        nonlocal next_index, tokens
        with httpx.Client() as client:
            barrier.wait()
            while not errors:
                with lock:
                    if next_index >= end:
                        return
                    i = next_index
                    next_index += 1
                t0 = time.perf_counter()
                try:
                    call(client, server, workload.request(i), timeout_s)
                except BaseException as exc:  # noqa: BLE001 - reported after the burst
                    errors.append(exc)
                    return
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    tokens += workload.tokens[i % len(workload.requests)] if workload.tokens else 0

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(workload.concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    if errors:
        raise BenchmarkError(f"{server.contender.key}: {errors[0]}") from errors[0]
    return Samples(latencies_s=latencies, tokens=tokens, requests=len(latencies), wall_s=wall, bursts=1)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), without numpy."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
