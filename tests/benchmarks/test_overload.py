"""benchmarks/overload.py against an in-process server whose capacity is known: one request at a time, SERVICE_S
each, at most `admit` requests queued or in flight, the rest shed with 429 + Retry-After (what the service does).
The capacity the tool measures is what that server drains, and twice it is shed, not queued without limit."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from benchmarks.overload import measure_capacity, run_load
from benchmarks.workloads import WorkloadSizes, build_workloads

SERVICE_S = 0.02  # one request's compute: the server drains at most 50 requests per second
REFERENCE_REQUESTS = len(build_workloads(WorkloadSizes())[2].requests)  # run_load scores each alone first


class FakeReranker:
    """ASGI app: POST /v1/rerank scores each document by its length, one request at a time."""

    def __init__(self, admit: int) -> None:
        self.admit = admit
        self.admitted = 0
        self.served = 0
        self.shed = 0
        self._lock: asyncio.Lock | None = None

    async def __call__(self, scope, receive, send) -> None:
        assert scope["type"] == "http" and scope["path"] == "/v1/rerank"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.admitted >= self.admit:
            self.shed += 1
            await self._answer(send, 429, {"error_type": "overloaded"}, [(b"retry-after", b"1")])
            return
        self.admitted += 1
        self._lock = self._lock or asyncio.Lock()
        try:
            async with self._lock:
                await asyncio.sleep(SERVICE_S)
                documents = json.loads(body)["documents"]
                results = [{"index": i, "relevance_score": len(d) / 1000} for i, d in enumerate(documents)]
                self.served += 1
        finally:
            self.admitted -= 1
        await self._answer(send, 200, {"results": results})

    @staticmethod
    async def _answer(send, status: int, payload: dict, headers: list | None = None) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *(headers or [])]})
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


def test_twice_the_measured_capacity_is_shed_not_queued():
    server = FakeReranker(admit=16)  # room for bench's 8 clients, not for an unbounded queue
    transport = httpx.ASGITransport(app=server)

    async def scenario():
        capacity = await measure_capacity("http://reranker", transport=transport, requests=24, warmup=4)
        shed_while_measuring = server.shed
        report = await run_load("http://reranker", rate_rps=2 * capacity.rps, seconds=2.0, transport=transport)
        return capacity, shed_while_measuring, report

    capacity, shed_while_measuring, report = asyncio.run(scenario())
    assert shed_while_measuring == 0
    assert capacity.requests == 24
    assert capacity.rps <= 1.1 / SERVICE_S  # it cannot measure more than the server drains
    summary = report.summary()
    assert report.problems(30.0) == [], summary
    assert summary["shed_429"] > 0, summary
    assert summary["accepted"] + summary["shed_429"] == summary["offered"]
    # what it drained while offered, plus the queue it had admitted when the offering stopped
    assert summary["accepted"] <= 1.1 * summary["seconds"] / SERVICE_S + server.admit, summary
    assert summary["wrong_scores"] == 0


def test_a_server_that_sheds_below_the_measuring_load_is_reported():
    transport = httpx.ASGITransport(app=FakeReranker(admit=2))  # 8 clients, room for 2
    with pytest.raises(RuntimeError, match="measuring capacity: HTTP 429"):
        asyncio.run(measure_capacity("http://reranker", transport=transport, requests=8, warmup=0))


def test_wrong_scores_under_load_are_counted():
    class Drifting(FakeReranker):
        async def _answer(self, send, status, payload, headers=None):
            if status == 200 and self.served > REFERENCE_REQUESTS:  # once the references are taken
                payload = {"results": [{**r, "relevance_score": r["relevance_score"] + 0.5}
                                       for r in payload["results"]]}
            await super()._answer(send, status, payload, headers)

    transport = httpx.ASGITransport(app=Drifting(admit=64))
    report = asyncio.run(run_load("http://reranker", rate_rps=10, seconds=0.5, transport=transport))
    assert report.summary()["wrong_scores"] > 0
    assert any("wrong scores" in problem for problem in report.problems(30.0))
