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
    from service.main import preflight
    from service.model_store import ModelNotAvailableError

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
    uvicorn.run("service.main:app", host=settings.host, port=settings.port, workers=settings.web_concurrency,
                log_level=settings.log_level, proxy_headers=True,
                timeout_graceful_shutdown=settings.rerank_shutdown_grace_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
