"""The test build of the service: with this folder first on PYTHONPATH and RERANK_TEST_FAULT_FILE set, every
worker process (uvicorn spawns them fresh, so the hook must load at interpreter start) reads that file
before each forward pass of the inference thread:

    kill         the inference thread dies (an exception no handler is meant to catch)
    block        the inference thread hangs until the file says something else (a wedged model)
    slow <s>     each forward pass takes <s> seconds longer (requests stay in flight for a while)
    (anything else, or no file: normal)

Never on the path of the real service: tests/service/test_faults.py puts it there for its subprocesses."""

from __future__ import annotations

import os
import time
from pathlib import Path

FAULT_FILE = os.environ.get("RERANK_TEST_FAULT_FILE")


class InferenceThreadKilled(BaseException):
    """Stands for what kills a thread for real (a C-level abort surfacing as SystemExit, MemoryError...)."""


def _mode() -> list[str]:
    try:
        return Path(FAULT_FILE).read_text().split()
    except OSError:
        return []


def _install() -> None:
    from service.engine import reranker

    original = reranker.RerankEngine.score_pairs

    def score_pairs(self, pairs):
        import threading

        if threading.current_thread().name == "rerank-inference":
            mode = _mode()
            if mode[:1] == ["kill"]:
                raise InferenceThreadKilled("killed by the test build (RERANK_TEST_FAULT_FILE)")
            while mode[:1] == ["block"]:
                time.sleep(0.05)
                mode = _mode()
            if mode[:1] == ["slow"]:
                time.sleep(float(mode[1]))
        return original(self, pairs)

    reranker.RerankEngine.score_pairs = score_pairs


if FAULT_FILE:
    _install()
