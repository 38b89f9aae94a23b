"""benchmarks/servers.py's RSS sampling of a server's process tree: it sees the workers a server runs (a child
started after the last listing within TREE_REFRESH_S), records their peak per phase, and does not re-scan /proc
on every 50 ms tick (the scan is what took CPU from the server being measured)."""

from __future__ import annotations

import sys
import time

import pytest

from benchmarks import servers
from benchmarks.servers import Contender, ServerProcess

# A "server" that starts a worker child after a moment and holds ~64 MiB in it, as uvicorn's workers do. The
# worker creates the file named by the server's argument once all 64 MiB are written (so resident): an RSS
# threshold alone is crossed while the bytes are still being written, since the interpreter's mapped code counts.
SERVER = """
import subprocess, sys, time
time.sleep(0.3)
worker = "b = bytearray(64 * 2**20); import pathlib, sys, time; pathlib.Path(sys.argv[1]).touch(); time.sleep(60)"
child = subprocess.Popen([sys.executable, "-c", worker, sys.argv[1]])
time.sleep(60)
"""
READY = "worker-ready"


@pytest.fixture
def server(tmp_path):
    ready = str(tmp_path / READY)
    contender = Contender(key="fake", label="fake", argv=lambda port: [sys.executable, "-c", SERVER, ready], env={},
                          health_path="/", rerank_path="/", body=lambda q, d: {}, parse=lambda p, n: [])
    process = ServerProcess(contender, tmp_path)
    process.start()
    yield process
    process.stop(timeout_s=5)


def _wait_for_worker(server: ServerProcess, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(server.tree()) < 2 or not (server.log_dir / READY).exists():
        assert time.monotonic() < deadline, "the fake server's worker did not start"
        time.sleep(0.05)


def test_the_sampler_lists_processes_once_per_refresh_and_then_sees_the_new_worker(server, monkeypatch):
    started = time.monotonic()
    assert [p.pid for p in server.sampled_tree(now=started)] == [server.proc.pid]  # before the worker exists
    _wait_for_worker(server)

    listings = []
    real_tree = ServerProcess.tree
    monkeypatch.setattr(ServerProcess, "tree", lambda self: listings.append(1) or real_tree(self))
    for tick in range(10):  # ticks within the refresh interval reuse the listing
        assert len(server.sampled_tree(now=started + tick * 0.05)) == 1
    assert listings == []

    later = server.sampled_tree(now=started + servers.TREE_REFRESH_S)
    assert len(listings) == 1
    assert len(later) == 2  # the worker started after the first listing is sampled from the next one on


def test_sample_memory_records_the_workers_peak_for_the_current_phase(server):
    _wait_for_worker(server)
    server.phase = "W2"
    server.sample_memory()
    track = server.memory["W2"]
    assert track.processes == 2
    assert track.peak_process_rss >= 64 * 2**20  # the worker holding 64 MiB is the largest process
    # its file-backed part (the interpreter's and its libraries' mapped code) is there, and the 64 MiB are not in it
    assert 0 < track.peak_process_file_rss <= track.peak_process_rss - 64 * 2**20
    assert track.peak_tree_rss > track.peak_process_rss


def test_a_server_that_exits_is_no_longer_sampled(server):
    _wait_for_worker(server)
    server.sample_memory()
    samples = server.memory[server.phase].samples
    server.stop(timeout_s=5)
    server.sample_memory()  # the listing is still cached, but the server has exited: nothing sampled
    assert server.memory[server.phase].samples == samples
    assert server.sampled_tree(now=time.monotonic() + servers.TREE_REFRESH_S) == []
