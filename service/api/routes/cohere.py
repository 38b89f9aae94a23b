"""Jina / Cohere v1 (`/v1/rerank`) and Cohere v2 (`/v2/rerank`) rerank APIs."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request

from service.api.auth import AuthenticatedRoute, require_auth
from service.api.deps import get_metrics, get_settings, ready_engine, require_json
from service.api.schemas import RerankV1Request, RerankV1Response, RerankV2Request, RerankV2Response
from service.api.scoring import score
from service.engine.ranking import rank
from service.engine.reranker import RerankEngine
from service.metrics import Metrics
from service.settings import Settings

router = APIRouter(tags=["rerank"], route_class=AuthenticatedRoute,
                   dependencies=[require_auth, Depends(require_json)])


def _meta(version: str) -> dict:
    return {"api_version": {"version": version}, "billed_units": {"search_units": 1}}


def _model_name(settings: Settings) -> str:
    # One model is served: the response names it by RERANK_MODEL (also when it is loaded from
    # RERANK_MODEL_PATH, a local copy of it), whatever model the client asked for.
    return settings.rerank_model


@router.post("/v1/rerank", response_model=RerankV1Response, response_model_exclude_none=True)
async def rerank_v1(body: RerankV1Request, request: Request, engine: RerankEngine = Depends(ready_engine),
                    metrics: Metrics = Depends(get_metrics), settings: Settings = Depends(get_settings)):
    """Jina / Cohere v1 shape: documents as strings or `{"text": ...}` objects, sorted results."""
    scores = await score(engine, metrics, settings, body.query, body.documents, request=request)
    results = [
        {"index": i, "relevance_score": float(scores.relevance[i]),
         **({"document": {"text": body.documents[i]}} if body.return_documents else {})}
        for i in rank(scores.relevance, body.top_n)
    ]
    return {"id": str(uuid.uuid4()), "model": _model_name(settings), "results": results,
            "usage": {"total_tokens": scores.total_tokens}, "meta": _meta("1")}


@router.post("/v2/rerank", response_model=RerankV2Response)
async def rerank_v2(body: RerankV2Request, request: Request, engine: RerankEngine = Depends(ready_engine),
                    metrics: Metrics = Depends(get_metrics), settings: Settings = Depends(get_settings)):
    """Cohere v2 shape: string documents, optional `max_tokens_per_doc`."""
    scores = await score(engine, metrics, settings, body.query, body.documents, request=request,
                         max_tokens_per_doc=body.max_tokens_per_doc)
    results = [{"index": i, "relevance_score": float(scores.relevance[i])}
               for i in rank(scores.relevance, body.top_n)]
    meta = _meta("2")
    meta["tokens"] = {"input_tokens": scores.total_tokens}
    return {"id": str(uuid.uuid4()), "results": results, "meta": meta}
