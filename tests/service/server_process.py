"""`python -m service` in a subprocess, as the image runs it: for the fault, fuzz and shutdown tests, which
need a process of its own (signals, exit codes, its own RSS)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.service.conftest import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FAULTS = PROJECT_ROOT / "tests" / "support" / "faults"
KEY = "server-process-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {"query": "when do cats sleep", "documents": ["Cats sleep all day.", "Stocks fell.", "A kitten naps."]}


class Server:
    def __init__(self, model_dir: Path, fault_file: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fault_file = fault_file
        self.log = fault_file.with_suffix(".log")
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("RERANK_", "HF_", "SUPABASE_")) and k not in {"ENVIRONMENT", "PORT"}}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=PROJECT_ROOT,
            env={**clean, "PYTHONPATH": os.pathsep.join([str(FAULTS), str(PROJECT_ROOT)]),
                 "RERANK_TEST_FAULT_FILE": str(fault_file), "RERANK_MODEL_PATH": str(model_dir),
                 "RERANK_API_KEYS": KEY, "HOST": "127.0.0.1", "PORT": str(self.port), "LOG_LEVEL": "info",
                 "RERANK_MAX_WAIT_MS": "0", **env},
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, text=True,
            start_new_session=True)  # its own process group: stop() ends the workers too

    def fault(self, mode: str) -> None:
        self.fault_file.write_text(mode)

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited {self.process.returncode}:\n{self.output()}"
            try:
                if httpx.get(f"{self.url}/api/health/", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not healthy after {timeout}s")

    def post(self, timeout: float = 60) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/rerank", json=BODY, headers=AUTH, timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_bytes(self) -> int:
        """Resident memory of the server and its workers."""
        root = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])

    def stop(self) -> None:
        """Kill the server and every worker it started (killing the supervisor alone orphans its workers,
        each holding a model)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)
