"""`python -m service`: uvicorn on $PORT with $WEB_CONCURRENCY workers (what the image runs)."""

from __future__ import annotations

import os
import signal
import sys
import tempfile

import uvicorn

from service.settings import SettingsError, load_settings


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"reranker: {exc}", file=sys.stderr)
        return 2
    from service.logging_config import configure_logging
    from service.main import preflight
    from service.model_store import ModelNotAvailableError

    configure_logging(settings.log_level)  # preflight may wait on the Hub: say so
    try:
        preflight(settings)  # before any worker starts: one clear message, exit code 1
    except ModelNotAvailableError as exc:
        print(f"reranker: {exc}", file=sys.stderr)
        return 1
    if settings.web_concurrency > 1 and not settings.prometheus_multiproc_dir:
        # Workers are separate processes: let /metrics aggregate them (prometheus_client's protocol
        # is this variable, read by every worker at import).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="reranker-metrics-")
    # SIGTERM is the platform's "stop": uvicorn stops accepting, finishes what is in flight and queued within
    # RERANK_SHUTDOWN_GRACE_S, then re-raises the signal to the handler it found. Found this one, the process
    # exits 0 (a clean stop), not 143.
    signal.signal(signal.SIGTERM, lambda *_: None)
    options = dict(host=settings.host, port=settings.port, workers=settings.web_concurrency,
                   log_level=settings.log_level, proxy_headers=True,
                   timeout_graceful_shutdown=settings.rerank_shutdown_grace_s)
    if settings.web_concurrency > 1:
        uvicorn.run("service.main:app", **options)
        return 0
    from service import state

    # One worker runs in this process: a model that fails to load stops the server, and we exit 1.
    server = uvicorn.Server(uvicorn.Config("service.main:app", **options))
    state.stop_server_on_load_failure(lambda: setattr(server, "should_exit", True))
    server.run()
    if state.load_failed():
        return 1
    return 0 if server.started else 3  # 3: uvicorn's own code for "application startup failed"


if __name__ == "__main__":
    sys.exit(main())
