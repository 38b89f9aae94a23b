"""Overload test: an open-loop load (requests sent on a fixed schedule, whatever the answers) at a multiple of
the server's W3 throughput, against one running server on 127.0.0.1, bounded in requests and seconds.

The throughput is measured first, against the same server, the way `make bench` measures W3 (8 concurrent
clients, W2-shaped requests, closed loop): a figure from benchmarks/results.json was taken on another
machine, or under another load, and twice *that* can be well under what this server drains here
(`--bench-file` still offers a multiple of the recorded figure). What it checks, as a client sees it:

- no 5xx other than the deliberate 503 of a request still queued after RERANK_REQUEST_TIMEOUT_S;
- the rest is 200 (accepted) or 429 with Retry-After (shed at once);
- every accepted request's scores equal the scores of the same request sent alone before the load;
- p99 latency of the accepted requests under the request timeout.

The caller (tests/image/test_load.py) adds what only it can see: the container's RSS over time, OOM kills.

    python -m benchmarks.overload --url http://127.0.0.1:8000 --api-key KEY --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.loadgen import percentile
from benchmarks.workloads import WorkloadSizes, build_workloads

RESULTS_FILE = Path(__file__).resolve().parent / "results.json"
SCORE_TOLERANCE = 1e-4  # batch composition changes the float summation order, nothing more


def bench_throughput_rps(results_file: Path = RESULTS_FILE) -> float:
    """W3 throughput of this service as `make bench` last measured it (benchmarks/results.json)."""
    data = json.loads(results_file.read_text())
    return float(data["contenders"]["service"]["workloads"]["W3"]["throughput_rps"])


@dataclass(frozen=True)
class Capacity:
    """W3 throughput measured against the server under test: `requests` answered in `seconds` of wall time."""

    requests: int
    seconds: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def _w3_pool(seed: int):
    return build_workloads(WorkloadSizes(), seed=seed)[2]


async def measure_capacity(url: str, *, api_key: str | None = None, requests: int = 32, warmup: int = 8,
                           request_timeout_s: float = 120.0, seed: int = 20240601,
                           transport: httpx.AsyncBaseTransport | None = None) -> Capacity:
    """W3 as `make bench` runs it (its 8 clients in a closed loop over its W2-shaped requests), after
    `warmup` requests that are not timed. Every answer must be a 200: a 429 here means the server sheds
    below its own capacity, and the load that follows would not measure what it claims."""
    workload = _w3_pool(seed)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(headers=headers, timeout=request_timeout_s, transport=transport) as client:

        async def clients(count: int) -> None:
            remaining = iter(range(count))

            async def loop() -> None:
                for i in remaining:
                    request = workload.request(i)
                    response = await client.post(f"{url}/v1/rerank", json={"query": request.query,
                                                                           "documents": list(request.documents)})
                    if response.status_code != 200:
                        raise RuntimeError(f"measuring capacity: HTTP {response.status_code} from {url}: "
                                           f"{response.text[:300]}")

            await asyncio.gather(*(loop() for _ in range(workload.concurrency)))

        await clients(warmup)
        started = time.monotonic()
        await clients(requests)
        return Capacity(requests, time.monotonic() - started)


@dataclass
class Outcome:
    status: int
    latency_s: float
    correct: bool | None = None  # 200 only
    retry_after: str | None = None
    error_type: str | None = None


@dataclass
class Report:
    offered_rps: float
    seconds: float
    outcomes: list[Outcome] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)

    def by_status(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for outcome in self.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def accepted(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == 200]

    def summary(self) -> dict:
        latencies = [o.latency_s for o in self.accepted]
        return {
            "offered_rps": round(self.offered_rps, 3),
            "seconds": self.seconds,
            "offered": len(self.outcomes) + len(self.transport_errors),
            "accepted": len(self.accepted),
            "shed_429": sum(o.status == 429 for o in self.outcomes),
            "timed_out_503": sum(o.status == 503 for o in self.outcomes),
            "other_status": {s: n for s, n in self.by_status().items() if s not in {200, 429, 503}},
            "transport_errors": len(self.transport_errors),
            "wrong_scores": sum(o.correct is False for o in self.accepted),
            "accepted_rps": round(len(self.accepted) / self.seconds, 3),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1) if latencies else None,
            "p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None,
            "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        }

    def problems(self, timeout_s: float) -> list[str]:
        found = []
        summary = self.summary()
        if summary["other_status"]:
            found.append(f"unexpected statuses {summary['other_status']}")
        if self.transport_errors:
            found.append(f"{len(self.transport_errors)} transport errors, first: {self.transport_errors[0]}")
        if summary["wrong_scores"]:
            found.append(f"{summary['wrong_scores']} accepted requests answered with wrong scores")
        bad_503 = [o for o in self.outcomes if o.status == 503 and o.error_type != "timeout"]
        if bad_503:
            found.append(f"{len(bad_503)} 503s that are not the queue timeout: {bad_503[0]}")
        if any(o.status in {429, 503} and not o.retry_after for o in self.outcomes):
            found.append("a 429/503 without Retry-After")
        if not self.accepted:
            found.append("nothing was accepted")
        elif summary["p99_ms"] >= timeout_s * 1000:
            found.append(f"p99 of accepted requests {summary['p99_ms']} ms is not under the {timeout_s} s timeout")
        return found


def _scores(body: dict, n: int) -> list[float]:
    by_index = {r["index"]: r["relevance_score"] for r in body["results"]}
    return [by_index[i] for i in range(n)]


async def _reference(client: httpx.AsyncClient, url: str, requests) -> list[list[float]]:
    """Each distinct request alone, before the load: the scores every accepted answer must match."""
    reference = []
    for request in requests:
        response = await client.post(f"{url}/v1/rerank", json={"query": request.query,
                                                               "documents": list(request.documents)})
        response.raise_for_status()
        reference.append(_scores(response.json(), len(request.documents)))
    return reference


async def run_load(url: str, *, rate_rps: float, seconds: float, api_key: str | None = None,
                   request_timeout_s: float = 30.0, seed: int = 20240601,
                   transport: httpx.AsyncBaseTransport | None = None) -> Report:
    pool = _w3_pool(seed).requests  # W3's requests: the ones bench timed
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    total = max(1, round(rate_rps * seconds))
    report = Report(offered_rps=rate_rps, seconds=seconds)
    limits = httpx.Limits(max_connections=total, max_keepalive_connections=64)
    # generous client timeout: the server is what must answer in time (503 past RERANK_REQUEST_TIMEOUT_S)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=request_timeout_s * 3 + 60,
                                 transport=transport) as client:
        reference = await _reference(client, url, pool)

        async def one(i: int, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            request = pool[i % len(pool)]
            started = time.monotonic()
            try:
                response = await client.post(f"{url}/v1/rerank", json={"query": request.query,
                                                                       "documents": list(request.documents)})
            except httpx.HTTPError as exc:
                report.transport_errors.append(f"{type(exc).__name__}: {exc}")
                return
            outcome = Outcome(response.status_code, time.monotonic() - started,
                              retry_after=response.headers.get("retry-after"))
            if response.status_code == 200:
                got = _scores(response.json(), len(request.documents))
                outcome.correct = all(math.isclose(a, b, abs_tol=SCORE_TOLERANCE)
                                      for a, b in zip(got, reference[i % len(pool)]))
            else:
                try:
                    outcome.error_type = response.json().get("error_type")
                except ValueError:
                    outcome.error_type = None
            report.outcomes.append(outcome)

        start = time.monotonic() + 0.5
        await asyncio.gather(*(one(i, start + i / rate_rps) for i in range(total)))
    return report


def format_report(summary: dict, extra: dict | None = None) -> str:
    figures = {**summary, **(extra or {})}
    return "overload: " + ", ".join(f"{key} {value}" for key, value in figures.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--multiple", type=float, default=2.0, help="offered load / measured W3 throughput")
    parser.add_argument("--rate", type=float, help="requests per second (overrides --multiple)")
    parser.add_argument("--bench-file", type=Path, help="take the throughput from this `make bench` results "
                                                         "file instead of measuring it (e.g. benchmarks/results.json)")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="the server's RERANK_REQUEST_TIMEOUT_S")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        parser.error("loopback only: --url must be http://127.0.0.1:<port> or http://localhost:<port>")
    if args.rate:
        rate = args.rate
    elif args.bench_file:
        rate = args.multiple * bench_throughput_rps(args.bench_file)
    else:
        capacity = asyncio.run(measure_capacity(args.url, api_key=args.api_key))
        print(f"measured W3 throughput: {capacity.rps:.3f} req/s ({capacity.requests} requests in "
              f"{capacity.seconds:.1f} s)")
        rate = args.multiple * capacity.rps
    report = asyncio.run(run_load(args.url, rate_rps=rate, seconds=args.seconds, api_key=args.api_key,
                                  request_timeout_s=args.request_timeout))
    print(format_report(report.summary()))
    problems = report.problems(args.request_timeout)
    for problem in problems:
        print(f"FAIL: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
