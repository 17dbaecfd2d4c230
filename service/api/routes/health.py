"""Liveness, readiness and Prometheus metrics; open even when API keys are configured."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.schemas import Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and answering."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request):
    """Ready when the model is loaded and warmed up; lists the execution providers actually running."""
    service = getattr(request.app.state, "service", None)
    if service is None or not service.runtime.warmed_up:
        return JSONResponse(Readiness(ready=False).model_dump(), status_code=503)
    return Readiness(
        ready=True,
        model=service.runtime.model_id,
        warmed_up=True,
        providers=service.runtime.providers,
        runtime=service.verdict.line if service.verdict else None,
        runtime_status=service.verdict.status if service.verdict else None,
        decode_workers=service.decode_pool.workers,
        queue_depth=service.batcher.depth,
    )


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
