"""What every rerank route does between validation and its own response shape: the document limit, the
request's deadline and disconnect watch, and the scheduler's refusals as HTTP answers."""

from __future__ import annotations

import asyncio

from fastapi import Request

from service.api.errors import ApiError
from service.api.limits import arrival_time
from service.engine.reranker import RerankEngine, Scores
from service.engine.scheduler import ClientGone, EngineUnavailable, QueueFull, QueueTimeout
from service.metrics import Metrics
from service.settings import Settings

# nginx's "client closed request": logged and counted, never read by anyone.
CLIENT_CLOSED_REQUEST = 499


def check_document_count(count: int, settings: Settings, field: str) -> None:
    if count > settings.rerank_max_documents:
        raise ApiError(422, f"{field}: {count} documents exceed the limit of {settings.rerank_max_documents} "
                            "per request (RERANK_MAX_DOCUMENTS); split the request", field=field)


async def wait_for_disconnect(request: Request) -> None:
    """Returns once the client has gone away (the body has been read: the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def score(engine: RerankEngine, metrics: Metrics, settings: Settings, query: str, documents: list[str],
                *, request: Request, field: str = "documents", max_tokens_per_doc: int | None = None) -> Scores:
    check_document_count(len(documents), settings, field)
    deadline = arrival_time(request.scope) + settings.rerank_request_timeout_s
    try:
        scores = await engine.rerank(query, documents, max_tokens_per_doc=max_tokens_per_doc, deadline=deadline,
                                     disconnected=lambda: wait_for_disconnect(request))
    except QueueFull as exc:
        raise ApiError(429, str(exc), error_type="overloaded",
                       headers={"Retry-After": str(exc.retry_after)}) from None
    except QueueTimeout as exc:
        raise ApiError(503, str(exc), error_type="timeout", headers={"Retry-After": str(exc.retry_after)}) from None
    except EngineUnavailable as exc:
        raise ApiError(503, str(exc), error_type="unavailable", headers={"Retry-After": "5"}) from None
    except ClientGone as exc:
        raise ApiError(CLIENT_CLOSED_REQUEST, str(exc), error_type="client_closed_request") from None
    except asyncio.CancelledError as exc:
        # uvicorn cancels what is still running when RERANK_SHUTDOWN_GRACE_S is over: answer a clear 503
        # (a retry reaches another instance) rather than its plain-text 500.
        if "graceful shutdown" not in " ".join(map(str, exc.args)):
            raise
        asyncio.current_task().uncancel()
        raise ApiError(503, "the server is shutting down (RERANK_SHUTDOWN_GRACE_S is over); retry",
                       error_type="unavailable", headers={"Retry-After": "1"}) from None
    metrics.documents.inc(len(documents))
    metrics.tokens.inc(scores.total_tokens)
    return scores
