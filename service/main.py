"""The FastAPI application: `uvicorn service.main:app` (the app is built on first access, so importing
this module reads no environment), or `create_app(settings)` in tests and embedding code."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service import __version__
from service.api.errors import install_error_handlers
from service.api.limits import BodySizeLimitMiddleware
from service.api.routes import cohere, health, info, tei
from service.api.routes.docs import install_docs
from service.credentials import Authenticator
from service.engine.factory import LoadedEngine, build_engine
from service.logging_config import configure_logging
from service.metrics import Metrics, RequestMetricsMiddleware
from service.model_store import ModelNotAvailableError, ModelSource, read_model_config
from service.settings import Settings, load_settings
from service.state import EngineLoader, EngineState

logger = logging.getLogger("service.main")


def preflight(settings: Settings) -> None:
    """Fail startup at once, with the fix in the message, when the model cannot be had: a RERANK_MODEL_PATH
    that is not a model directory, production without the model on disk, or (development) a Hub that cannot
    be reached for a model that is not in the cache."""
    read_model_config(ModelSource.from_settings(settings), local_files_only=settings.is_production)


def create_app(settings: Settings | None = None, *, loader: EngineLoader = build_engine,
               exit_on_load_failure: bool = False) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    metrics = Metrics(settings.prometheus_multiproc_dir)
    state = EngineState(settings, loader, exit_on_failure=exit_on_load_failure)
    authenticator = Authenticator.from_settings(settings)
    if authenticator.enabled:
        logger.info("Authentication: %s", authenticator.describe())
    else:
        logger.warning("Authentication: none configured, every route is open (RERANK_API_KEYS, "
                       "SUPABASE_JWT_SECRET or SUPABASE_JWT_PUBLIC_KEY turn it on)")

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        try:
            preflight(settings)
        except ModelNotAvailableError as exc:
            logger.critical("%s", exc)
            raise

        def on_ready(loaded: LoadedEngine) -> None:
            metrics.load_seconds.set(loaded.info.get("load_seconds", 0.0))

        state.start(on_ready)
        yield
        state.stop()

    app = FastAPI(title="Reranker", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Cross-encoder reranking with Jina/Cohere v1, Cohere v2 and TEI-compatible APIs.")
    install_docs(app)  # /docs and /redoc with their assets served from here (no CDN)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.engine_state = state
    app.state.authenticator = authenticator
    install_error_handlers(app)
    for router in (health.router, cohere.router, tei.router, info.router):
        app.include_router(router)

    # Outermost last: metrics see every response, the body limit runs before any parsing.
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.rerank_max_body_bytes,
                       body_timeout_s=settings.rerank_request_timeout_s)
    if settings.cors_allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_allowed_origins,
                           allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"], max_age=600)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn service.main:app` looks the attribute up: build it then, from the environment.
    if name == "app":
        application = create_app(exit_on_load_failure=True)
        globals()["app"] = application
        return application
    raise AttributeError(name)
