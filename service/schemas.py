"""Response bodies of the HTTP API that only the service has (the localization results and errors are
`fnac.schemas`, shared with the Python API and the client)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModelInfo(BaseModel):
    model: str
    name: str
    sample_rate: int
    clip_seconds: float
    image_size: int
    heatmap_size: int | None
    tau: float
    sounding_threshold: float
    sounding_threshold_source: str = Field(description="metadata | settings | fallback")
    ogl_alpha: float | None = Field(
        None,
        description="object-guided localization: the weight of the audio-visual map in the fused map the "
        "service serves (boxes, images); null when the model has no object branch",
    )
    sounding_calibration: dict | None = Field(
        None,
        description="how the metadata threshold was calibrated: rule, target and measured rates per negative "
        "kind, split and dataset (fnac eval --write-threshold); null when the model does not say",
    )
    precision: str
    training_data: str
    fnac_version: str
    providers: list[str]
    metadata: dict[str, str] = Field(description="all metadata_props of the ONNX file")


class Readiness(BaseModel):
    ready: bool
    model: str | None = None
    warmed_up: bool = False
    providers: list[str] = []
    runtime: str | None = None  # the verdict line: GPU in use, CPU only, or GPU present but unused and why
    runtime_status: str | None = None  # gpu | cpu | degraded
    decode_workers: int = 0
    queue_depth: int = 0
