"""Cross-request dynamic batching: one inference thread owns the model; concurrent requests queue
their pairs and share forward passes up to a token budget (as text-embeddings-inference and Infinity do).

The event loop never runs model code: it enqueues and awaits a future."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.engine.tokenization import EncodedPairs

logger = logging.getLogger("service.scheduler")

Pair = tuple[list[int], list[int] | None]
RunPairs = Callable[[list[Pair]], np.ndarray]


@dataclass
class _Job:
    pairs: list[Pair]
    deliver: Callable[[np.ndarray | None, BaseException | None], None]
    tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = sum(len(ids) for ids, _ in self.pairs)


class BatchScheduler:
    def __init__(self, run_pairs: RunPairs, *, batch_tokens: int, max_wait_s: float,
                 on_idle: Callable[[], object] | None = None) -> None:
        self._run_pairs = run_pairs
        self._on_idle = on_idle  # called when the queue is empty after a forward (memory release)
        self._batch_tokens = batch_tokens
        self._max_wait_s = max_wait_s
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="rerank-inference", daemon=True)
        self.forward_calls = 0  # jobs merged into one call count once: exposed for tests and metrics
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._thread.start()
            self._started = True

    def stop(self, timeout: float = 5.0) -> None:
        if self._started:
            self._queue.put(None)
            self._thread.join(timeout)
            self._started = False

    async def submit(self, encoded: EncodedPairs) -> np.ndarray:
        """Logits for these pairs, computed on the inference thread, possibly with other requests' pairs."""
        if len(encoded) == 0:
            return np.zeros(0, dtype=np.float32)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()

        def settle(result: np.ndarray | None, error: BaseException | None) -> None:
            if future.done():  # the client went away
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def deliver(result: np.ndarray | None, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(settle, result, error)

        types = encoded.token_type_ids or [None] * len(encoded)
        self._queue.put(_Job(list(zip(encoded.input_ids, types)), deliver))
        return await future

    def _collect(self, first: _Job) -> list[_Job]:
        jobs, tokens = [first], first.tokens
        deadline = time.monotonic() + self._max_wait_s
        while tokens < self._batch_tokens:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:  # stop requested: finish what we hold, then exit
                self._queue.put(None)
                break
            jobs.append(job)
            tokens += job.tokens
        return jobs

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = self._collect(first)
            pairs = [pair for job in jobs for pair in job.pairs]
            try:
                logits = self._run_pairs(pairs)
                self.forward_calls += 1
            except BaseException as exc:  # noqa: BLE001 - every waiting request must hear about it
                logger.exception("inference failed for %d pairs", len(pairs))
                for job in jobs:
                    job.deliver(None, exc)
                continue
            start = 0
            for job in jobs:
                job.deliver(logits[start : start + len(job.pairs)], None)
                start += len(job.pairs)
            if self._on_idle is not None and self._queue.empty():
                try:
                    self._on_idle()
                except Exception:  # noqa: BLE001 - never let housekeeping stop the inference thread
                    logger.exception("idle callback failed")
