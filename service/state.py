"""The model's lifecycle inside one worker: loading (in the background, so health can answer 503),
ready, or failed."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from enum import Enum

from service.engine.factory import LoadedEngine
from service.settings import Settings

logger = logging.getLogger("service.state")

EngineLoader = Callable[[Settings], LoadedEngine]
INFERENCE_DIED_EXIT_CODE = 70  # EX_SOFTWARE

# `python -m service` with one worker stops its own uvicorn server through this (exit 1, no signal);
# otherwise (uvicorn's own CLI, several workers) a failed load ends the worker with SIGTERM.
_stop_server: Callable[[], None] | None = None
_load_failed = threading.Event()


def stop_server_on_load_failure(stop: Callable[[], None]) -> None:
    global _stop_server
    _stop_server = stop


def load_failed() -> bool:
    """Did a model load fail in this process, with exit_on_failure set?"""
    return _load_failed.is_set()


class Status(str, Enum):
    loading = "loading"
    ready = "ready"
    failed = "failed"


class EngineState:
    def __init__(self, settings: Settings, loader: EngineLoader, *, exit_on_failure: bool) -> None:
        self.settings = settings
        self._loader = loader
        self._exit_on_failure = exit_on_failure
        self.status = Status.loading
        self.loaded: LoadedEngine | None = None
        self.error: str | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, on_ready: Callable[[LoadedEngine], None] | None = None) -> None:
        def load() -> None:
            try:
                loaded = self._loader(self.settings)
            except Exception as exc:  # noqa: BLE001 - reported through health and the log
                self.error = f"{type(exc).__name__}: {exc}"
                self.status = Status.failed
                logger.critical("Model failed to load: %s", self.error)
                self._ready.set()
                if self._exit_on_failure:  # let the orchestrator restart us rather than serve 503 forever
                    _load_failed.set()
                    if _stop_server is not None:
                        _stop_server()
                    else:
                        os.kill(os.getpid(), signal.SIGTERM)
                return
            self.loaded = loaded
            loaded.engine.scheduler.on_death = self._inference_died
            if on_ready is not None:
                on_ready(loaded)
            self.status = Status.ready
            self._ready.set()

        self._thread = threading.Thread(target=load, name="model-loader", daemon=True)
        self._thread.start()

    def _inference_died(self, error: BaseException | None) -> None:
        """Health already answers 503. Under a server (`python -m service`, `uvicorn service.main:app`) the
        worker also exits non-zero, shortly, once the queued requests' 503s are on their way: uvicorn's
        supervisor replaces it (WEB_CONCURRENCY > 1), or the container exits and the platform restarts it."""
        if self._exit_on_failure:
            def leave() -> None:
                logger.critical("Exiting (status %d) so that this worker is replaced", INFERENCE_DIED_EXIT_CODE)
                logging.shutdown()
                os._exit(INFERENCE_DIED_EXIT_CODE)

            threading.Timer(1.0, leave).start()

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.loaded is not None:
            self.loaded.engine.stop()
