"""The scheduler's admission, deadlines, drops, throughput estimate and watchdog, with a fake model (no HTTP,
no torch): exact accounting, no timing guesses."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.engine.scheduler import BatchScheduler, ClientGone, EngineUnavailable, QueueFull, QueueTimeout
from service.engine.tokenization import EncodedPairs


def pairs(n: int, length: int = 10) -> EncodedPairs:
    return EncodedPairs([[1] * length for _ in range(n)], None)


class FakeModel:
    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []
        self.seconds = 0.0
        self.die = False

    def __call__(self, batch):
        self.entered.set()
        if self.die:
            raise SystemExit("killed")
        assert self.gate.wait(10)
        time.sleep(self.seconds)
        self.calls.append(len(batch))
        return np.arange(len(batch), dtype=np.float32)


@pytest.fixture
def model_and_scheduler():
    model = FakeModel()
    scheduler = BatchScheduler(model, batch_tokens=10_000, max_wait_s=0.0, max_queued_tokens=100, watchdog_s=0.3)
    scheduler.start()
    yield model, scheduler
    model.gate.set()
    scheduler.stop()


async def _wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)


def test_admission_accounting_and_the_bound(model_and_scheduler):
    model, scheduler = model_and_scheduler

    async def scenario():
        first = asyncio.ensure_future(scheduler.submit(pairs(5)))  # 50 tokens, computing
        await _wait_until(model.entered.is_set)
        second = asyncio.ensure_future(scheduler.submit(pairs(5)))  # 100 tokens admitted: the bound, exactly
        await _wait_until(lambda: scheduler.admitted_tokens == 100)
        with pytest.raises(QueueFull) as refused:
            await scheduler.submit(pairs(1, length=1))
        assert refused.value.retry_after >= 1
        model.gate.set()
        assert list(await first) == [0, 1, 2, 3, 4]
        assert len(await second) == 5
        assert scheduler.admitted_tokens == 0 and scheduler.admitted_requests == 0
        oversized = await scheduler.submit(pairs(30))  # 300 tokens > 100, but alone: admitted
        assert len(oversized) == 30

    asyncio.run(scenario())


class _Failing(FakeModel):
    def __call__(self, batch):
        raise RuntimeError("model failed")


@pytest.mark.parametrize("model_type", [FakeModel, _Failing], ids=["answered", "failed"])
def test_a_request_is_released_before_its_client_hears_the_answer(model_type):
    """A client that has its answer (or error) and sends the next request at once must not find its own finished
    request still counted, or it is refused with 429 for work that is done. The loop below records the admission
    at the moment the inference thread hands an answer to the event loop."""
    model = model_type()
    model.gate.set()
    scheduler = BatchScheduler(model, batch_tokens=10_000, max_wait_s=0.0, max_queued_tokens=100)
    at_delivery: list[tuple[int, int]] = []

    class RecordingLoop(asyncio.SelectorEventLoop):
        def call_soon_threadsafe(self, callback, *args, **kwargs):
            at_delivery.append((scheduler.admitted_tokens, scheduler.admitted_requests))
            return super().call_soon_threadsafe(callback, *args, **kwargs)

    async def scenario():
        for _ in range(3):
            try:
                assert len(await scheduler.submit(pairs(8))) == 8  # 80 of the 100 tokens allowed
            except RuntimeError as failed:
                assert str(failed) == "model failed"

    scheduler.start()
    try:
        with asyncio.Runner(loop_factory=RecordingLoop) as runner:
            runner.run(scenario())
    finally:
        scheduler.stop()
    assert len(at_delivery) >= 3 and set(at_delivery) == {(0, 0)}


def test_the_measured_throughput_bounds_the_wait_too():
    model = FakeModel()
    model.gate.set()
    scheduler = BatchScheduler(model, batch_tokens=10_000, max_wait_s=0.0, max_queued_tokens=10_000,
                               queue_wait_limit_s=1.0)
    scheduler._tokens_per_s = 100.0  # as if measured: 1 s drains 100 tokens
    model.gate.clear()
    scheduler.start()
    try:
        async def scenario():
            first = asyncio.ensure_future(scheduler.submit(pairs(5)))  # 50 tokens: 0.5 s
            await _wait_until(model.entered.is_set)
            second = asyncio.ensure_future(scheduler.submit(pairs(4)))  # 90 tokens: 0.9 s, admitted
            await _wait_until(lambda: scheduler.admitted_tokens == 90)
            with pytest.raises(QueueFull, match="half of RERANK_REQUEST_TIMEOUT_S"):
                await scheduler.submit(pairs(2))  # 110 tokens would take 1.1 s > 1 s
            model.gate.set()
            await first
            await second

        asyncio.run(scenario())
    finally:
        model.gate.set()
        scheduler.stop()


def test_deadlines_and_disconnects_drop_queued_jobs_only(model_and_scheduler):
    model, scheduler = model_and_scheduler

    async def scenario():
        running = asyncio.ensure_future(scheduler.submit(pairs(2), deadline=time.monotonic() + 0.5))
        await _wait_until(model.entered.is_set)
        with pytest.raises(QueueTimeout):
            await scheduler.submit(pairs(3), deadline=time.monotonic() + 0.3)
        gone = asyncio.Event()
        waiter = asyncio.ensure_future(scheduler.submit(pairs(4), disconnected=gone.wait))
        await _wait_until(lambda: scheduler.admitted_requests == 2)
        gone.set()
        with pytest.raises(ClientGone):
            await waiter
        with pytest.raises(QueueTimeout):  # already past its deadline: never admitted
            await scheduler.submit(pairs(1), deadline=time.monotonic() - 1)
        await asyncio.sleep(0.6)
        model.gate.set()
        assert len(await running) == 2  # in flight past its deadline: still answered
        assert model.calls == [2]  # the dropped 3 + 4 pairs never reached the model
        assert scheduler.dropped == 2 and scheduler.admitted_tokens == 0

    asyncio.run(scenario())


def test_retry_after_follows_the_measured_throughput(model_and_scheduler):
    model, scheduler = model_and_scheduler
    assert scheduler.retry_after(10_000) == 1  # nothing measured yet
    model.gate.set()
    model.seconds = 0.05

    async def scenario():
        for _ in range(3):
            await scheduler.submit(pairs(10))  # 100 tokens in ~0.05 s: ~2,000 tokens/s

    asyncio.run(scenario())
    assert 3 <= scheduler.retry_after(10_000) <= 8
    assert scheduler.retry_after(10**9) == 60  # capped


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the kill, on purpose
def test_the_watchdog_and_a_dead_thread(model_and_scheduler):
    model, scheduler = model_and_scheduler
    assert scheduler.health().ok
    deaths = []
    scheduler.on_death = deaths.append

    async def scenario():
        job = asyncio.ensure_future(scheduler.submit(pairs(1)))
        await _wait_until(model.entered.is_set)
        assert scheduler.health().ok
        await asyncio.sleep(0.4)
        assert not scheduler.health().ok and "wedged" in scheduler.health().reason
        model.gate.set()
        await job
        assert scheduler.health().ok
        model.die = True
        queued = [asyncio.ensure_future(scheduler.submit(pairs(1))) for _ in range(3)]
        for future in queued:
            with pytest.raises(EngineUnavailable):
                await future
        with pytest.raises(EngineUnavailable):
            await scheduler.submit(pairs(1))

    asyncio.run(scenario())
    assert not scheduler.health().ok and "died" in scheduler.health().reason
    assert len(deaths) == 1 and isinstance(deaths[0], SystemExit)
