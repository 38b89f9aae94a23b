"""What every rerank route does between validation and its own response shape."""

from __future__ import annotations

from service.api.errors import ApiError
from service.engine.reranker import RerankEngine, Scores
from service.metrics import Metrics
from service.settings import Settings


def check_document_count(count: int, settings: Settings, field: str) -> None:
    if count > settings.rerank_max_documents:
        raise ApiError(422, f"{field}: {count} documents exceed the limit of {settings.rerank_max_documents} "
                            "per request (RERANK_MAX_DOCUMENTS); split the request", field=field)


async def score(engine: RerankEngine, metrics: Metrics, settings: Settings, query: str, documents: list[str],
                *, field: str = "documents", max_tokens_per_doc: int | None = None) -> Scores:
    check_document_count(len(documents), settings, field)
    scores = await engine.rerank(query, documents, max_tokens_per_doc=max_tokens_per_doc)
    metrics.documents.inc(len(documents))
    metrics.tokens.inc(scores.total_tokens)
    return scores
