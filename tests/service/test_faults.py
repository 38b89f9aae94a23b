"""Faults, on the real server (`python -m service`, as the image runs it): graceful shutdown on SIGTERM,
a dead worker replaced by uvicorn's supervisor, a dead inference thread ending a single worker with a
non-zero status. The test build (tests/support/faults/sitecustomize.py) kills, blocks or slows the inference
thread from a file the test writes."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from service.state import INFERENCE_DIED_EXIT_CODE
from tests.service.server_process import Server


@pytest.fixture
def server(bert_model_dir, tmp_path):
    started: list[Server] = []

    def start(**env: str) -> Server:
        srv = Server(bert_model_dir, tmp_path / f"fault-{len(started)}", **env)
        started.append(srv)
        srv.wait_healthy()
        return srv

    yield start
    for srv in started:
        srv.stop()


def test_sigterm_finishes_requests_in_flight_and_queued_then_exits_0(server):
    srv = server(RERANK_SHUTDOWN_GRACE_S="30")
    srv.fault("slow 0.4")  # each forward pass 0.4 s longer: 6 requests take >= 2.4 s in all
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(srv.post) for _ in range(6)]
        time.sleep(0.6)  # all six sent: one computing, the others queued
        signalled = time.monotonic()
        srv.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no longer accepting
            httpx.get(f"{srv.url}/api/health/", timeout=2)
        responses = [future.result(timeout=60) for future in futures]
    assert [r.status_code for r in responses] == [200] * 6
    assert all(len(r.json()["results"]) == 3 for r in responses)
    assert srv.process.wait(30) == 0
    assert time.monotonic() - signalled < 30
    log = srv.output()
    assert "Waiting for connections to close" in log or "Shutting down" in log


def test_the_grace_period_bounds_the_shutdown(server):
    srv = server(RERANK_SHUTDOWN_GRACE_S="1")
    srv.fault("block")  # nothing in flight can finish
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(srv.post) for _ in range(2)]
        time.sleep(0.5)
        signalled = time.monotonic()
        srv.process.send_signal(signal.SIGTERM)
        code = srv.process.wait(30)
        elapsed = time.monotonic() - signalled
        srv.fault("")
        responses = [future.result(timeout=30) for future in futures]
    for response in responses:  # what could not finish in time is told so: a deliberate 503, then a retry
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "shutting down" in response.json()["message"]
    assert elapsed < 10, elapsed  # 1 s of grace, then the lifespan shutdown; not the 30 s default
    assert code == 0


def test_a_dead_inference_thread_ends_a_single_worker_non_zero(server):
    srv = server()
    assert srv.post().status_code == 200
    srv.fault("kill")
    response = srv.post()
    assert response.status_code == 503 and response.json()["error_type"] == "unavailable"
    assert srv.process.wait(30) == INFERENCE_DIED_EXIT_CODE  # the platform restarts the container
    assert "the inference thread died" in srv.output()


def _worker_pids(srv: Server) -> set[int]:
    """uvicorn's live workers (spawned children; zombies and multiprocessing's helpers excluded)."""
    pids = set()
    for child in psutil.Process(srv.process.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                pids.add(child.pid)
        except psutil.Error:  # exited meanwhile
            pass
    return pids


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_dead_workers_are_replaced_with_several_workers(server):
    srv = server(WEB_CONCURRENCY="2", RERANK_THREADS="1")
    _wait_for(lambda: len(_worker_pids(srv)) == 2, 60)
    first = _worker_pids(srv)
    # a worker killed outright (OOM killer, segfault)
    victim = sorted(first)[0]
    os.kill(victim, signal.SIGKILL)
    _wait_for(lambda: len(_worker_pids(srv)) == 2 and victim not in _worker_pids(srv), 60)
    srv.wait_healthy()
    # a worker whose inference thread dies exits by itself, and is replaced too
    srv.fault("kill")
    before = _worker_pids(srv)
    assert srv.post().status_code == 503
    srv.fault("")
    _wait_for(lambda: len(_worker_pids(srv)) == 2 and _worker_pids(srv) != before, 60)
    # both replacements serve (each has loaded its model before health says 200 through it)
    _wait_for(lambda: all(srv.post().status_code == 200 for _ in range(6)), 120)
    assert srv.process.poll() is None
