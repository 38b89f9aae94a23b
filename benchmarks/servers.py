"""The contenders: how each server is started, asked to rerank, and watched (cold start, memory).

Each contender runs as its own process (its own process group) on a free loopback port. The harness
only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work"
TREE_REFRESH_S = 1.0  # how often the RSS sampler re-lists a server's processes (ServerProcess.sampled_tree)
INFINITY_VENV = WORK_DIR / "infinity-venv"
SERVICE_VENV = WORK_DIR / "service-venv"  # benchmarks/service_env.py

# Quiet, offline, reproducible: the same for every contender.
COMMON_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Contender:
    """One server under test: its command line, its routes and its request/response shapes."""

    key: str  # "seed", "infinity", "service"
    label: str
    argv: Callable[[int], list[str]]  # port -> command line
    env: dict[str, str]
    health_path: str
    rerank_path: str
    body: Callable[[str, list[str]], dict[str, Any]]
    parse: Callable[[Any, int], list[float]]  # response JSON, n documents -> scores by input index
    info_path: str | None = None
    dtype: str = "fp32"  # which matmul peak its MFU is measured against (refined from /info)


def _scores_from_results(payload: Any, n: int) -> list[float]:
    results = payload["results"] if isinstance(payload, dict) else payload
    scores = [float("nan")] * n
    for item in results:
        scores[int(item["index"])] = float(item.get("relevance_score", item.get("score")))
    return scores


def seed_contender(model_path: Path) -> Contender:
    return Contender(
        key="seed",
        label="(a) seed-style server",
        argv=lambda port: [sys.executable, str(BENCH_DIR / "seed_server.py"), "--model-path", str(model_path),
                           "--host", "127.0.0.1", "--port", str(port)],
        env={},
        health_path="/api/health/",
        rerank_path="/v1/rerank",
        body=lambda query, docs: {"query": query, "documents": docs, "return_documents": False},
        parse=_scores_from_results,
    )


def infinity_contender(model_path: Path, venv: Path = INFINITY_VENV) -> Contender:
    return Contender(
        key="infinity",
        label="(b) Infinity",
        argv=lambda port: [str(venv / "bin" / "infinity_emb"), "v2", "--model-id", str(model_path),
                           "--served-model-name", "proxy", "--engine", "torch", "--device", "cpu",
                           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env={"INFINITY_ANONYMOUS_USAGE_STATS": "0", "INFINITY_QUEUE_SIZE": "32000"},
        health_path="/health",
        rerank_path="/rerank",
        body=lambda query, docs: {"model": "proxy", "query": query, "documents": docs,
                                  "return_documents": False},
        parse=_scores_from_results,
        info_path="/models",
    )


def service_contender(model_path: Path, extra_env: dict[str, str] | None = None, *, key: str = "service",
                      label: str = "(c) this service", python: str = sys.executable) -> Contender:
    """`python -m service` from the project root; `python` is benchmarks.service_env's venv in measured runs."""
    return Contender(
        key=key,
        label=label,
        argv=lambda port: [python, "-m", "service"],
        # anonymous on loopback, like the other contenders (production otherwise refuses to start keyless)
        env={"RERANK_MODEL_PATH": str(model_path), "ENVIRONMENT": "production", "HOST": "127.0.0.1",
             "RERANK_ALLOW_ANONYMOUS": "true", "LOG_LEVEL": "warning", **(extra_env or {})},
        health_path="/api/health/",
        rerank_path="/v1/rerank",
        body=lambda query, docs: {"query": query, "documents": docs, "return_documents": False},
        parse=_scores_from_results,
        info_path="/info",
    )


@dataclass
class MemoryTrack:
    """RSS of a server's process tree, sampled; the per-process peak is the 'per worker' figure."""

    peak_process_rss: int = 0  # largest single process in the tree (a worker)
    # The file-backed part of that process's RSS in the sample that set the peak (psutil's `shared`: RssFile +
    # RssShmem, the shared libraries' code and the mapped model file); the rest is the process's own memory.
    peak_process_file_rss: int | None = None  # None where psutil cannot tell (not Linux)
    peak_tree_rss: int = 0  # the whole tree (supervisor + workers)
    samples: int = 0
    processes: int = 0



@dataclass
class ServerProcess:
    contender: Contender
    log_dir: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    cold_start_s: float | None = None
    info: dict[str, Any] | None = None
    error: str | None = None
    # RSS by phase: "load" (process start -> healthy), "idle" (others are measured), "W1", "W2", ...
    memory: dict[str, MemoryTrack] = field(default_factory=dict)
    hwm_bytes: int = 0  # kernel high-water mark (VmHWM) of the largest process, load included
    phase: str = "load"
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _tree: list[psutil.Process] = field(default_factory=list)  # sampled_tree's last listing
    _tree_listed_at: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.contender.key}.log"

    def start(self) -> None:
        self.port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **COMMON_ENV, **self.contender.env, "PORT": str(self.port)}
        log = self.log_path.open("wb")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(self.contender.argv(self.port), env=env, cwd=PROJECT_ROOT, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def wait_healthy(self, timeout_s: float, poll_s: float = 0.05) -> bool:
        """Cold start = process start to the first 200 on the health route."""
        assert self.proc is not None
        deadline = self.started_at + timeout_s
        url = self.base_url + self.contender.health_path
        with httpx.Client(timeout=2.0) as client:
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None:
                    self.error = f"exited with code {self.proc.returncode} before it was healthy; " \
                                 f"last log lines:\n{self.tail_log()}"
                    return False
                try:
                    if client.get(url).status_code == 200:
                        self.cold_start_s = time.perf_counter() - self.started_at
                        self.phase = "idle"
                        self._fetch_info(client)
                        return True
                except httpx.HTTPError:
                    pass
                time.sleep(poll_s)
        self.error = f"not healthy after {timeout_s:.0f} s; last log lines:\n{self.tail_log()}"
        return False

    def _fetch_info(self, client: httpx.Client) -> None:
        if not self.contender.info_path:
            return
        try:
            response = client.get(self.base_url + self.contender.info_path)
            if response.status_code == 200:
                self.info = response.json()
        except (httpx.HTTPError, ValueError):
            self.info = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tree(self) -> list[psutil.Process]:
        if not self.running:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def sampled_tree(self, now: float | None = None) -> list[psutil.Process]:
        """`tree()`, re-listed at most every TREE_REFRESH_S: listing children scans all of /proc (1.5 ms a server
        on the bench machine), reading a known process's RSS costs 0.02 ms. Listed every 50 ms for five servers,
        the sampler took 8 ms of every 50 from the 2 cores the measured server runs on."""
        if not self.running:
            return []
        now = time.monotonic() if now is None else now
        if self._tree_listed_at is None or now - self._tree_listed_at >= TREE_REFRESH_S:
            self._tree = self.tree()
            self._tree_listed_at = now
        return self._tree

    def sample_memory(self) -> None:
        procs = self.sampled_tree()
        rss, file_backed = [], []
        for proc in procs:
            try:
                info = proc.memory_info()
            except psutil.Error:
                continue
            rss.append(info.rss)
            file_backed.append(getattr(info, "shared", None))  # Linux; elsewhere unknown
        if not rss:
            return
        largest = max(range(len(rss)), key=rss.__getitem__)
        with self._lock:
            track = self.memory.setdefault(self.phase, MemoryTrack())
            if rss[largest] > track.peak_process_rss:
                track.peak_process_rss = rss[largest]
                track.peak_process_file_rss = file_backed[largest]
            track.peak_tree_rss = max(track.peak_tree_rss, sum(rss))
            track.samples += 1
            track.processes = max(track.processes, len(rss))

    def read_hwm(self) -> None:
        """VmHWM: the kernel's exact peak RSS of each process since it started (catches load spikes)."""
        for proc in self.tree():
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.hwm_bytes = max(self.hwm_bytes, int(line.split()[1]) * 1024)
            except OSError:
                continue

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.tree():
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
        return total

    def tail_log(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the process group this harness created for this server (SIGTERM, then SIGKILL)."""
        if not self.running:
            return
        self.read_hwm()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=timeout_s)


class MemorySampler:
    """One background thread sampling every running server's RSS every `interval_s`."""

    def __init__(self, servers: list[ServerProcess], interval_s: float = 0.05) -> None:
        self.servers = servers
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for server in list(self.servers):
                server.sample_memory()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemorySampler:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
