"""scripts/smoke_test.py against a small fake reranker on 127.0.0.1 (loopback only)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from infra import smoke

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "smoke_test.py"
HEALTHY = {"status": "healthy", "version": "2.0.0"}


class FakeReranker:
    """A stand-in for the service: healthy after `starting_for` health requests, then ranks by fixed
    scores."""

    def __init__(self) -> None:
        self.starting_for = 0
        self.health_body: object = dict(HEALTHY)
        self.scores = [0.97, 0.08, 0.03, 0.01]  # documents[0] is the relevant one
        self.rerank_failures = 0  # answer 502 this many times first
        self.mangle = None  # a function that edits the results before they are sent
        self.raw_rerank_body: bytes | None = None
        self.requests: list[tuple[str, str, dict, bytes]] = []

    def results(self, payload: dict) -> list[dict]:
        ranked = sorted(range(len(payload["documents"])), key=lambda i: -self.scores[i])[: payload["top_n"]]
        results = [
            {"index": i, "relevance_score": self.scores[i], "document": {"text": payload["documents"][i]}}
            for i in ranked
        ]
        return self.mangle(results) if self.mangle else results


@pytest.fixture
def fake():
    state = FakeReranker()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            state.requests.append(("GET", self.path, dict(self.headers), b""))
            if self.path != "/api/health/":
                return self._send(404, b'{"detail": "not found"}')
            if state.starting_for > 0:
                state.starting_for -= 1
                return self._send(503, b'{"status": "loading"}')
            self._send(200, json.dumps(state.health_body).encode())

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append(("POST", self.path, dict(self.headers), body))
            if self.path != "/v1/rerank":
                return self._send(404, b'{"detail": "not found"}')
            if state.rerank_failures > 0:
                state.rerank_failures -= 1
                return self._send(502, b"<html>bad gateway</html>", "text/html")
            if state.raw_rerank_body is not None:
                return self._send(200, state.raw_rerank_body)
            payload = json.loads(body)
            self._send(200, json.dumps({"id": "x", "results": state.results(payload)}).encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


def test_a_healthy_service_passes(fake):
    result = cli(fake.url, "--deadline", "10")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: ") and result.stdout.count("\n") == 1
    get, post = fake.requests
    assert (get[0], get[1]) == ("GET", "/api/health/")
    assert (post[0], post[1]) == ("POST", "/v1/rerank")
    sent = json.loads(post[3])
    assert sent == {"query": smoke.QUERY, "documents": smoke.DOCUMENTS, "top_n": smoke.TOP_N}
    assert post[2]["Content-Type"] == "application/json"


def test_a_wrong_health_body_fails_at_once_with_one_line(fake):
    fake.health_body = {"status": "healthy", "version": "1.9.0"}
    started = time.monotonic()
    result = cli(fake.url, "--deadline", "30")
    assert result.returncode == 1
    assert time.monotonic() - started < 10  # no retrying on a wrong answer
    assert result.stderr.startswith("FAIL: ") and result.stderr.count("\n") == 1
    assert '"version": "1.9.0"' in result.stderr and "/api/health/" in result.stderr
    assert not any(method == "POST" for method, *_ in fake.requests)


def test_unsorted_results_fail(fake):
    fake.mangle = lambda results: list(reversed(results))
    result = cli(fake.url, "--deadline", "10")
    assert result.returncode == 1
    assert "not sorted by relevance_score descending" in result.stderr


def test_it_retries_while_the_service_starts(fake):
    fake.starting_for = 3
    summary = smoke.run(fake.url, deadline_seconds=10, interval_seconds=0.05)
    assert "(attempt 4)" in summary
    assert [path for method, path, *_ in fake.requests if method == "GET"] == ["/api/health/"] * 4


def test_it_retries_a_failing_proxy_on_the_rerank_route(fake):
    fake.rerank_failures = 2
    assert "(attempt 3)" in smoke.run(fake.url, deadline_seconds=10, interval_seconds=0.05)


def test_it_gives_up_at_the_deadline_with_the_last_reason(fake):
    fake.starting_for = 10**6
    started = time.monotonic()
    result = cli(fake.url, "--deadline", "1", "--interval", "0.1")
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "not ready after 1s" in result.stderr and "HTTP 503" in result.stderr
    assert 0.8 < elapsed < 15
    assert sum(1 for method, *_ in fake.requests if method == "GET") >= 5


def test_nothing_listening_is_retried_then_reported():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(smoke.SmokeFailure, match=r"not ready after 0\.3s .*Connection refused"):
        smoke.run(f"http://127.0.0.1:{port}", deadline_seconds=0.3, interval_seconds=0.05)


def test_expect_ranking_checks_the_relevant_document_wins(fake):
    fake.scores = [0.2, 0.9, 0.1, 0.05]
    assert smoke.run(fake.url, deadline_seconds=5)  # well-formed and sorted: fine without the option
    result = cli(fake.url, "--deadline", "5", "--expect-ranking")
    assert (
        result.returncode == 1
        and "expected documents[0]" in result.stderr
        and "got documents[1]" in result.stderr
    )


def test_the_api_key_is_sent_as_a_bearer_token(fake):
    smoke.run(fake.url, api_key="k-123", deadline_seconds=5)
    assert all(headers.get("Authorization") == "Bearer k-123" for _, _, headers, _ in fake.requests)


def test_a_trailing_slash_in_the_url_is_fine(fake):
    smoke.run(fake.url + "/", deadline_seconds=5)
    assert fake.requests[0][1] == "/api/health/"


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda r: r[:2], "top_n=3 but 2 results came back"),
        (
            lambda r: [{**r[0], "relevance_score": 1.5}, *r[1:]],
            "relevance_score=1.5 is not a number in [0, 1]",
        ),
        (lambda r: [{**r[0], "relevance_score": "0.9"}, *r[1:]], "is not a number in [0, 1]"),
        (lambda r: [r[0], {**r[1], "index": r[0]["index"]}, r[2]], "is not a distinct document index"),
        (lambda r: [{**r[0], "index": 7}, *r[1:]], "is not a distinct document index"),
        (
            lambda r: [{**r[0], "document": {"text": "something else"}}, *r[1:]],
            "document.text is not documents[0]",
        ),
    ],
)
def test_malformed_results_fail(fake, mangle, reason):
    fake.mangle = mangle
    with pytest.raises(smoke.SmokeFailure, match=re_escape(reason)):
        smoke.run(fake.url, deadline_seconds=5)


def test_a_non_json_answer_fails(fake):
    fake.raw_rerank_body = b"<html>oops</html>"
    with pytest.raises(smoke.SmokeFailure, match="non-JSON body"):
        smoke.run(fake.url, deadline_seconds=5)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


class FakeClock:
    """time.monotonic/time.sleep stand-ins: sleeping advances the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def closed_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_nothing_listening_fails_after_the_grace_period_not_the_deadline():
    time_ = FakeClock()
    with pytest.raises(smoke.SmokeFailure) as failure:
        smoke.run(closed_url(), clock=time_.clock, sleep=time_.sleep)  # defaults: 300 s deadline, 30 s grace
    waited = time_.now - 1000.0
    assert 30 <= waited <= 33, f"gave up after {waited:.0f} s of connection refused"
    assert str(failure.value).startswith("nothing is listening at http://127.0.0.1:")
    assert "connection refused for 30s" in str(failure.value)


def test_nothing_listening_on_the_command_line_says_so_quickly():
    started = time.monotonic()
    result = cli(closed_url(), "--refused-grace", "1", "--interval", "0.1")
    assert result.returncode == 1
    assert result.stderr.startswith("FAIL: nothing is listening at http://127.0.0.1:")
    assert "Connection refused" in result.stderr and result.stderr.count("\n") == 1
    assert time.monotonic() - started < 15


def test_a_service_that_answers_while_loading_keeps_the_long_wait(fake):
    fake.starting_for = 10**6  # up (accepts connections) but 503 while loading
    with pytest.raises(smoke.SmokeFailure, match=r"not ready after 1s .*HTTP 503"):
        smoke.run(fake.url, deadline_seconds=1, interval_seconds=0.05, refused_grace_seconds=0.1)


def test_refused_at_first_then_up_within_the_grace_period_passes(fake, monkeypatch):
    time_ = FakeClock()
    real_check = smoke.check_health
    refusals = iter(range(5))  # the platform is still starting the container: 5 refusals, 15 s

    def check(base_url, **kwargs):
        if next(refusals, None) is not None:
            raise smoke.NotReady(f"GET {base_url}/api/health/: [Errno 111] Connection refused", refused=True)
        return real_check(base_url, **kwargs)

    monkeypatch.setattr(smoke, "check_health", check)
    assert "(attempt 6)" in smoke.run(fake.url, clock=time_.clock, sleep=time_.sleep)


def test_the_api_key_comes_from_rerank_api_key(fake):
    env = {**os.environ, "RERANK_API_KEY": "k-from-env"}
    result = subprocess.run([sys.executable, str(SCRIPT), fake.url, "--deadline", "5"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert {headers.get("Authorization") for _, _, headers, _ in fake.requests} == {"Bearer k-from-env"}
    fake.requests.clear()
    result = subprocess.run([sys.executable, str(SCRIPT), fake.url, "--deadline", "5", "--api-key", "k-flag"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert {headers.get("Authorization") for _, _, headers, _ in fake.requests} == {"Bearer k-flag"}
