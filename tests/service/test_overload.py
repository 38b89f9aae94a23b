"""Overload, as a client sees it over real HTTP: past RERANK_MAX_QUEUED_TOKENS a 429 with Retry-After at once;
still queued after RERANK_REQUEST_TIMEOUT_S a 503 with Retry-After; a client that disconnects while queued is
dropped and never computed; a slow body is cut off with 408; the watchdog turns health 503 while the inference
thread is wedged or dead.

The inference thread is held by a gate in the model's forward pass, so "queued" is exact, not a timing guess."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from service.engine.factory import build_engine
from service.main import create_app
from service.settings import load_settings
from tests.service.conftest import live_server

DOCS = ["Cats sleep most of the day.", "Stocks fell on Monday.", "A kitten naps in the sun."]


class Gate:
    """Wraps the backend's forward pass: blocks while closed, counts what it computed."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.rows_computed = 0
        self.kill = False

    def loader(self, settings):
        loaded = build_engine(settings)  # the warm-up runs ungated
        forward = loaded.engine.backend.forward

        def gated(features):
            self.entered.set()
            if self.kill:
                raise KilledThread("the test kills the inference thread")
            assert self.open.wait(60), "gate never opened"
            self.rows_computed += len(features["input_ids"])
            return forward(features)

        loaded.engine.backend.forward = gated
        return loaded


class KilledThread(BaseException):
    pass


@pytest.fixture
def gated(bert_model_dir):
    """gated(**env) -> (base url, gate, scheduler) of a live server whose inference thread is gated."""
    with ThreadPoolExecutor(8) as pool:
        servers = []

        def start(**env):
            gate = Gate()
            settings = load_settings(RERANK_MODEL_PATH=str(bert_model_dir), RERANK_PRECISION="fp32",
                                     RERANK_MAX_WAIT_MS="0", **env)
            app = create_app(settings, loader=gate.loader)
            server = live_server(app=app)
            url = server.__enter__()
            servers.append((server, gate))
            return url, gate, app.state.engine_state.loaded.engine.scheduler, pool

        yield start
        for server, gate in servers:
            gate.open.set()
            server.__exit__(None, None, None)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def post(url: str, documents=DOCS, timeout: float = 60.0, **extra) -> httpx.Response:
    return httpx.post(f"{url}/v1/rerank", json={"query": "cats", "documents": documents, **extra}, timeout=timeout)


def test_past_the_bound_429_at_once_then_everything_admitted_completes(gated):
    url, gate, scheduler, pool = gated(RERANK_MAX_QUEUED_TOKENS="1")
    first = pool.submit(post, url)  # admitted (it is alone, whatever its size) and held in the forward pass
    wait_until(gate.entered.is_set)
    per_request = scheduler.admitted_tokens
    assert per_request > 1
    scheduler.max_queued_tokens = limit = 2 * per_request  # room for exactly one more of these
    second = pool.submit(post, url)
    wait_until(lambda: scheduler.admitted_requests == 2)
    started = time.monotonic()
    refused = post(url)
    assert time.monotonic() - started < 1.0  # at once, not after waiting for room
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    body = refused.json()
    assert body["error_type"] == "overloaded" and f"RERANK_MAX_QUEUED_TOKENS={limit}" in body["message"]
    gate.open.set()
    for future in (first, second):
        response = future.result(timeout=30)
        assert response.status_code == 200 and len(response.json()["results"]) == 3
    assert scheduler.admitted_tokens == 0 and scheduler.admitted_requests == 0
    assert post(url).status_code == 200  # room again


def test_a_request_bigger_than_the_bound_runs_when_it_is_alone(gated):
    url, gate, scheduler, pool = gated(RERANK_MAX_QUEUED_TOKENS="5")
    gate.open.set()
    response = post(url, documents=DOCS * 20)
    assert response.status_code == 200 and len(response.json()["results"]) == 60


def test_still_queued_after_the_timeout_503_and_never_computed(gated):
    url, gate, scheduler, pool = gated(RERANK_REQUEST_TIMEOUT_S="1")
    in_flight = pool.submit(post, url)
    wait_until(gate.entered.is_set)
    started = time.monotonic()
    queued = post(url, documents=["never computed"] * 7)
    waited = time.monotonic() - started
    assert queued.status_code == 503, queued.text
    assert 0.5 < waited < 3.0
    assert int(queued.headers["retry-after"]) >= 1
    assert queued.json()["error_type"] == "timeout" and "RERANK_REQUEST_TIMEOUT_S" in queued.json()["message"]
    assert scheduler.admitted_requests == 1 and scheduler.dropped == 1
    time.sleep(0.5)
    gate.open.set()  # the request in flight past the timeout is still answered: it was not queued
    assert in_flight.result(timeout=30).status_code == 200
    assert gate.rows_computed == len(DOCS)  # the 7 timed-out pairs never reached the model


def _send_and_hang_up(url: str, documents: list[str]) -> None:
    host, port = url.removeprefix("http://").split(":")
    body = httpx.Request("POST", "http://x/", json={"query": "cats", "documents": documents}).read()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.3)  # parsed, tokenized, queued


def test_a_client_that_disconnects_while_queued_is_dropped_not_computed(gated):
    url, gate, scheduler, pool = gated()
    in_flight = pool.submit(post, url)
    wait_until(gate.entered.is_set)
    for _ in range(3):
        _send_and_hang_up(url, ["abandoned"] * 11)
    wait_until(lambda: scheduler.dropped == 3)
    assert scheduler.admitted_requests == 1
    gate.open.set()
    assert in_flight.result(timeout=30).status_code == 200
    assert post(url).status_code == 200
    assert gate.rows_computed == 2 * len(DOCS)  # none of the 33 abandoned pairs was computed


def test_a_slow_body_gets_408(gated):
    url, gate, scheduler, pool = gated(RERANK_REQUEST_TIMEOUT_S="1")
    gate.open.set()
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"query\": ")
        started = time.monotonic()
        sock.settimeout(10)
        answer = sock.recv(4096).decode()
        assert time.monotonic() - started < 5
    assert answer.startswith("HTTP/1.1 408"), answer
    assert '"error_type":"request_timeout"' in answer.replace(" ", "")
    assert post(url).status_code == 200


def test_the_watchdog_reports_a_wedged_inference_thread_then_recovers(gated):
    url, gate, scheduler, pool = gated(RERANK_WATCHDOG_S="1")
    assert httpx.get(f"{url}/api/health/").status_code == 200
    in_flight = pool.submit(post, url)
    wait_until(gate.entered.is_set)
    time.sleep(0.3)
    assert httpx.get(f"{url}/api/health/").status_code == 200  # busy, not yet wedged
    wait_until(lambda: httpx.get(f"{url}/api/health/").status_code == 503, timeout=5)
    health = httpx.get(f"{url}/api/health/").json()
    assert health["status"] == "unhealthy" and "wedged" in health["error"]
    gate.open.set()
    assert in_flight.result(timeout=30).status_code == 200
    assert httpx.get(f"{url}/api/health/").status_code == 200


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the kill, on purpose
def test_a_dead_inference_thread_fails_its_requests_with_503_and_health_says_so(gated):
    url, gate, scheduler, pool = gated()
    gate.kill = True
    gate.open.set()
    response = post(url)
    assert response.status_code == 503 and response.json()["error_type"] == "unavailable"
    wait_until(lambda: not scheduler._thread.is_alive())
    health = httpx.get(f"{url}/api/health/")
    assert health.status_code == 503 and "died" in health.json()["error"]
    later = post(url)
    assert later.status_code == 503 and "died" in later.json()["message"]
