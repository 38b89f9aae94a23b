"""Hugging Face text-embeddings-inference `/rerank`, so TEI clients can switch without changes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.api.auth import AuthenticatedRoute, require_auth
from service.api.deps import get_metrics, get_settings, ready_engine, require_json
from service.api.errors import ApiError
from service.api.schemas import TeiRank, TeiRerankRequest
from service.api.scoring import check_document_count, score
from service.engine.ranking import rank
from service.engine.reranker import RerankEngine
from service.metrics import Metrics
from service.settings import Settings

router = APIRouter(tags=["rerank"], route_class=AuthenticatedRoute,
                   dependencies=[require_auth, Depends(require_json)])


@router.post("/rerank", response_model=list[TeiRank], response_model_exclude_none=True)
async def rerank_tei(body: TeiRerankRequest, request: Request, engine: RerankEngine = Depends(ready_engine),
                     metrics: Metrics = Depends(get_metrics), settings: Settings = Depends(get_settings)):
    """TEI shape: `texts`, `raw_scores` (logits instead of sigmoid), `return_text`, `truncate`."""
    if body.truncate is False:
        check_document_count(len(body.texts), settings, "texts")
        lengths = engine.encoder.count_untruncated(body.query, body.texts)
        longest = max(lengths)
        if longest > engine.max_length:
            raise ApiError(413, f"texts[{lengths.index(longest)}]: query + text is {longest} tokens, more than the "
                                f"model's {engine.max_length}; send truncate=true or shorten it",
                           field="texts", error_type="validation")
    scores = await score(engine, metrics, settings, body.query, body.texts, request=request, field="texts")
    values = scores.logits if body.raw_scores else scores.relevance
    return [{"index": i, "score": float(values[i]), **({"text": body.texts[i]} if body.return_text else {})}
            for i in rank(values)]
