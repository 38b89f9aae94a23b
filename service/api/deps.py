"""Dependencies the routes inject: the ready engine, the settings, the JSON content-type check."""

from __future__ import annotations

from email.message import Message

from fastapi import Request

from service.api.errors import ApiError
from service.engine.reranker import RerankEngine
from service.metrics import Metrics
from service.settings import Settings
from service.state import EngineState, Status


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_state(request: Request) -> EngineState:
    return request.app.state.engine_state


def ready_engine(request: Request) -> RerankEngine:
    state: EngineState = request.app.state.engine_state
    if state.status is Status.ready and state.loaded is not None:
        return state.loaded.engine
    if state.status is Status.failed:
        raise ApiError(503, f"model failed to load: {state.error}", error_type="unavailable")
    raise ApiError(503, "model is loading; retry shortly", error_type="unavailable")


def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type is None:
        raise ApiError(415, "Content-Type must be application/json", field="content-type",
                       error_type="unsupported_media_type")
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or not (subtype == "json" or subtype.endswith("+json")):
        raise ApiError(415, f"Content-Type must be application/json, not {content_type}",
                       field="content-type", error_type="unsupported_media_type")
