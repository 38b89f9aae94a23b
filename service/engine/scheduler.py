"""Cross-request dynamic batching: one inference thread owns the model; concurrent requests queue
their pairs and share forward passes up to a token budget (as text-embeddings-inference and Infinity do).

The event loop never runs model code: it enqueues and awaits a future.

Admission and overload (what a client sees):
- the work admitted (tokens queued plus in flight) is bounded by `max_queued_tokens`, and by time: once the
  throughput has been measured, by what drains within `queue_wait_limit_s` (half the request timeout), so a
  slower CPU (a busy host, a smaller plan) sheds sooner instead of letting requests time out. A request past
  either bound is refused at once (`QueueFull`, HTTP 429 with Retry-After). A request larger than the bound is
  admitted only when nothing else is, so it runs alone instead of never;
- a request still queued at its deadline is dropped (`QueueTimeout`, HTTP 503 with Retry-After);
- a request whose client disconnects while queued is dropped, never computed;
- the watchdog: `health()` reports the inference thread dead, or wedged (no progress for `watchdog_s` while
  work waits), so the platform can restart the worker.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from service.engine.tokenization import EncodedPairs

logger = logging.getLogger("service.scheduler")

Pair = tuple[list[int], list[int] | None]
RunPairs = Callable[[list[Pair]], np.ndarray]

_QUEUED, _RUNNING, _DROPPED, _DONE = "queued", "running", "dropped", "done"
DEAD_MESSAGE = "the inference thread has died; this worker is restarting"
RETRY_AFTER_MAX_S = 60


class Overloaded(Exception):
    """Base of the scheduler's refusals; `retry_after` is a whole number of seconds (>= 1)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(Overloaded):
    pass


class QueueTimeout(Overloaded):
    pass


class ClientGone(Exception):
    """The client disconnected before its request was computed: it was dropped."""


class EngineUnavailable(Exception):
    """The inference thread is gone: nothing can be computed by this worker any more."""


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str | None = None


@dataclass
class _Job:
    pairs: list[Pair]
    deliver: Callable[[np.ndarray | None, BaseException | None], None]
    tokens: int = field(init=False)
    count: int = field(init=False)
    state: str = _QUEUED

    def __post_init__(self) -> None:
        self.tokens = sum(len(ids) for ids, _ in self.pairs)
        self.count = len(self.pairs)


class BatchScheduler:
    def __init__(self, run_pairs: RunPairs, *, batch_tokens: int, max_wait_s: float,
                 max_queued_tokens: int | None = None, queue_wait_limit_s: float | None = None,
                 watchdog_s: float = 30.0, on_idle: Callable[[], object] | None = None) -> None:
        self._run_pairs = run_pairs
        self._on_idle = on_idle  # called when the queue is empty after a forward (memory release)
        self._batch_tokens = batch_tokens
        self._max_wait_s = max_wait_s
        self.max_queued_tokens = max_queued_tokens
        self.queue_wait_limit_s = queue_wait_limit_s
        self.watchdog_s = watchdog_s
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="rerank-inference", daemon=True)
        self.forward_calls = 0  # jobs merged into one call count once: exposed for tests and metrics
        self.dropped = 0  # jobs dropped before computing (client gone, timed out)
        self._started = False
        self._stopping = False
        self._dead = False
        self._lock = threading.Lock()  # guards the counters below and every job's state
        self._admitted_tokens = 0  # queued + in flight
        self._admitted_jobs = 0
        self._last_progress = time.monotonic()
        self._tokens_per_s: float | None = None  # moving average of the measured throughput
        self.on_death: Callable[[BaseException | None], None] | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        if not self._started:
            self._thread.start()
            self._started = True

    def stop(self, timeout: float = 5.0) -> None:
        if self._started:
            self._stopping = True
            self._queue.put(None)
            self._thread.join(timeout)
            self._started = False

    # ---- what the rest of the service reads ---------------------------------------------------------------

    @property
    def admitted_tokens(self) -> int:
        return self._admitted_tokens

    @property
    def admitted_requests(self) -> int:
        return self._admitted_jobs

    def beat(self) -> None:
        """Progress: called by the model runner after every forward pass (the watchdog reads it)."""
        self._last_progress = time.monotonic()

    def health(self) -> Health:
        if self._dead or (self._started and not self._thread.is_alive()):
            return Health(False, "the inference thread has died")
        with self._lock:
            waiting, idle_for = self._admitted_jobs, time.monotonic() - self._last_progress
        if waiting and idle_for > self.watchdog_s:
            return Health(False, f"the inference thread is wedged: no progress for {idle_for:.0f}s with "
                                 f"{waiting} request(s) waiting (watchdog RERANK_WATCHDOG_S={self.watchdog_s:g})")
        return Health(True)

    def retry_after(self, tokens: int | None = None) -> int:
        """Seconds until the work admitted now (or `tokens`) has drained, at the measured throughput."""
        rate = self._tokens_per_s
        backlog = self._admitted_tokens if tokens is None else tokens
        if not rate:
            return 1
        return max(1, min(RETRY_AFTER_MAX_S, math.ceil(backlog / rate)))

    # ---- the request side (event loop) --------------------------------------------------------------------

    async def submit(self, encoded: EncodedPairs, *, deadline: float | None = None,
                     disconnected: Callable[[], Awaitable[object]] | None = None) -> np.ndarray:
        """Logits for these pairs, computed on the inference thread, possibly with other requests' pairs.

        deadline: time.monotonic() by which computing must have started (QueueTimeout otherwise).
        disconnected: returns when the client has gone away (the job is then dropped if still queued)."""
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
        job = _Job(list(zip(encoded.input_ids, types)), deliver)
        if deadline is not None and time.monotonic() >= deadline:
            raise QueueTimeout("the request timed out before it could be queued", self.retry_after())
        self._admit(job)
        self._queue.put(job)
        watcher = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        try:
            return await self._wait(job, future, watcher, deadline)
        except BaseException:  # cancelled (shutdown past its grace period) or refused: never computed later
            self._drop(job)
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
            if not future.done():
                future.cancel()

    def _admit(self, job: _Job) -> None:
        with self._lock:
            if self._dead:
                raise EngineUnavailable(DEAD_MESSAGE)
            limit = self.max_queued_tokens
            if limit is not None and self._admitted_tokens and self._admitted_tokens + job.tokens > limit:
                raise QueueFull(
                    f"overloaded: {self._admitted_tokens} tokens are queued or being scored and this request "
                    f"adds {job.tokens}, over RERANK_MAX_QUEUED_TOKENS={limit}; retry later",
                    self.retry_after())
            rate, wait_limit = self._tokens_per_s, self.queue_wait_limit_s
            if rate and wait_limit is not None and self._admitted_tokens \
                    and (self._admitted_tokens + job.tokens) / rate > wait_limit:
                raise QueueFull(
                    f"overloaded: the work queued would take {(self._admitted_tokens + job.tokens) / rate:.0f}s to "
                    f"drain at the measured {rate:.0f} tokens/s, over the {wait_limit:g}s a request may wait "
                    "(half of RERANK_REQUEST_TIMEOUT_S); retry later", self.retry_after())
            if not self._admitted_jobs:  # the watchdog's clock starts when work arrives
                self._last_progress = time.monotonic()
            self._admitted_tokens += job.tokens
            self._admitted_jobs += 1

    async def _wait(self, job: _Job, future: asyncio.Future, watcher: asyncio.Future | None,
                    deadline: float | None) -> np.ndarray:
        while True:
            waiting = {future} if watcher is None else {future, watcher}
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if future in done:
                return future.result()
            if watcher is not None and watcher in done:
                self._drop(job)  # computed anyway if it is already running: nobody will read it
                raise ClientGone("the client disconnected while its request was queued")
            # the deadline passed
            if self._drop(job):
                raise QueueTimeout("the request was still queued after RERANK_REQUEST_TIMEOUT_S; retry later",
                                   self.retry_after())
            deadline = None  # already computing: its answer is on the way

    def _drop(self, job: _Job) -> bool:
        """Take a queued job out of the work admitted; False when it is already running or done."""
        with self._lock:
            if job.state != _QUEUED:
                return False
            job.state = _DROPPED
            self._release(job)
            self.dropped += 1
        job.pairs = []  # free its token ids now; the queue entry is skipped by the inference thread
        return True

    def _release(self, job: _Job) -> None:
        self._admitted_tokens -= job.tokens
        self._admitted_jobs -= 1

    # ---- the inference thread -----------------------------------------------------------------------------

    def _take(self, job: _Job) -> bool:
        with self._lock:
            if job.state != _QUEUED:
                return False
            job.state = _RUNNING
            return True

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
            if self._take(job):
                jobs.append(job)
                tokens += job.tokens
        return jobs

    def _loop(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                if not self._take(first):
                    continue
                self._run(self._collect(first))
                if self._on_idle is not None and self._queue.empty():
                    try:
                        self._on_idle()
                    except Exception:  # noqa: BLE001 - never let housekeeping stop the inference thread
                        logger.exception("idle callback failed")
        except BaseException as exc:  # the thread is dying: say so, and fail everyone waiting
            error = exc
            raise
        finally:
            if not self._stopping:
                self._died(error)

    def _run(self, jobs: list[_Job]) -> None:
        pairs = [pair for job in jobs for pair in job.pairs]
        tokens = sum(job.tokens for job in jobs)
        started = time.monotonic()
        try:
            logits = self._run_pairs(pairs)
            self.forward_calls += 1
        except Exception as exc:  # every waiting request must hear about it; the thread lives on
            logger.exception("inference failed for %d pairs", len(pairs))
            self._finish(jobs)
            for job in jobs:
                job.deliver(None, exc)
            return
        except BaseException:  # the thread is being killed: its requests must not wait forever
            self._finish(jobs)
            for job in jobs:
                job.deliver(None, EngineUnavailable(DEAD_MESSAGE))
            raise
        self._measured(tokens, time.monotonic() - started)
        self._finish(jobs)
        start = 0
        for job in jobs:
            job.deliver(logits[start : start + job.count], None)
            start += job.count

    def _finish(self, jobs: list[_Job]) -> None:
        """Release the jobs' admission before anyone hears the answer: a client that got its result and sends
        the next request at once must find the work it had admitted gone, or it is refused (429) for its own
        finished request."""
        with self._lock:
            for job in jobs:
                job.state = _DONE
                self._release(job)
        self.beat()

    def _measured(self, tokens: int, seconds: float) -> None:
        if seconds <= 0 or tokens <= 0:
            return
        rate = tokens / seconds
        self._tokens_per_s = rate if self._tokens_per_s is None else 0.8 * self._tokens_per_s + 0.2 * rate

    def _died(self, error: BaseException | None) -> None:
        logger.critical("the inference thread died (%s): failing the queued requests",
                        f"{type(error).__name__}: {error}" if error else "exited")
        with self._lock:
            self._dead = True  # from here on nothing is admitted: what is queued now is all there is to fail
        unavailable = EngineUnavailable(DEAD_MESSAGE)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and self._take(job):
                self._finish([job])
                job.deliver(None, unavailable)
        if self.on_death is not None:
            self.on_death(error)
