"""Plain log lines on stderr, the same under uvicorn, `python -m service` and the scripts."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "info") -> None:
    service_logger = logging.getLogger("service")
    service_logger.setLevel(level.upper())
    if not any(getattr(h, "_reranker", False) for h in service_logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._reranker = True  # type: ignore[attr-defined]
        service_logger.addHandler(handler)
