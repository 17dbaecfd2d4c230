"""What model is being served, from its ONNX metadata."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ApiKey, ServiceDep
from service.schemas import ModelInfo

router = APIRouter(tags=["model"], dependencies=[ApiKey])


@router.get("/v1/model", response_model=ModelInfo)
async def model_info(service: ServiceDep) -> ModelInfo:
    meta = service.runtime.metadata
    return ModelInfo(
        model=service.runtime.model_id,
        name=meta.model_name,
        sample_rate=meta.sample_rate,
        clip_seconds=meta.clip_seconds,
        image_size=meta.image_size,
        heatmap_size=meta.heatmap_size,
        tau=meta.tau,
        sounding_threshold=service.sounding_threshold,
        sounding_threshold_source=service.sounding_threshold_source,
        ogl_alpha=meta.ogl_alpha,
        sounding_calibration=meta.sounding_calibration,
        precision=meta.precision,
        training_data=meta.training_data,
        fnac_version=meta.fnac_version,
        providers=service.runtime.providers,
        metadata=meta.raw,
    )
