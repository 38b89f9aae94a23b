from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from service import __version__
from service.api.auth import require_auth, require_metrics_access
from service.api.deps import get_metrics, get_settings, get_state
from service.metrics import Metrics
from service.settings import Settings
from service.state import EngineState

router = APIRouter(tags=["info"])


@router.get("/info", dependencies=[require_auth])
def info(state: EngineState = Depends(get_state), settings: Settings = Depends(get_settings)):
    """What is served and how: model, revision, device, backend and precision, limits, version."""
    loaded = state.loaded.info if state.loaded else {}
    return {
        "version": __version__,
        "status": state.status.value,
        "model_id": settings.rerank_model,
        "model_path": str(settings.model_path) if settings.model_path else None,
        "revision": settings.rerank_model_revision,
        "environment": settings.environment.value,
        "max_length": settings.rerank_max_length,
        **loaded,
        "limits": {
            "max_documents": settings.rerank_max_documents,
            "max_body_bytes": settings.rerank_max_body_bytes,
            "max_length": loaded.get("max_length", settings.rerank_max_length),
        },
        "batching": {"batch_tokens": loaded.get("batch_tokens", settings.rerank_batch_tokens),
                     "max_wait_ms": settings.rerank_max_wait_ms},
        "workers": settings.web_concurrency,
        "apis": ["/v1/rerank", "/v2/rerank", "/rerank"],
    }


@router.get("/metrics", include_in_schema=False, dependencies=[require_metrics_access])
def metrics(metrics: Metrics = Depends(get_metrics)):
    payload, content_type = metrics.exposition()
    return Response(payload, media_type=content_type)
