from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from service import __version__
from service.api.deps import get_state
from service.api.schemas import Health
from service.state import EngineState, Status

router = APIRouter(tags=["health"])


@router.get("/api/health/", response_model=Health,
            responses={503: {"description": "Model still loading, failed to load, or inference dead/wedged"}})
@router.get("/api/health", response_model=Health, include_in_schema=False)
def health(state: EngineState = Depends(get_state)):
    """200 once the model is loaded and warmed up; 503 with the reason before that."""
    if state.status is Status.ready and state.loaded is not None:
        engine_health = state.loaded.engine.scheduler.health()  # the watchdog: dead or wedged inference
        if engine_health.ok:
            return {"status": "healthy", "version": __version__}
        return JSONResponse({"status": "unhealthy", "version": __version__, "error": engine_health.reason},
                            status_code=503)
    body = {"status": state.status.value, "version": __version__}
    if state.error:
        body["error"] = state.error
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
