"""Response bodies of the HTTP API."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Box(BaseModel):
    """A region the sound comes from, in pixels of the uploaded frame (x1, y1 exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int
    score: float = Field(description="raw cosine (heatmap x tau) at the region's best pixel")


class Heatmap(BaseModel):
    """The model's heatmap as it left the network, plus optionally the upsampled map as a PNG."""

    shape: list[int] = Field(description="[h, w] of the model's map, e.g. [7, 7]")
    values: list[list[float]] = Field(description="row-major raw values, cosine similarity / tau")
    png: str | None = Field(
        None,
        description="base64 8-bit greyscale PNG at the frame's size: round(255 x min-max normalised bilinear "
        "upsampling); only with heatmap_png=true",
    )


class Timings(BaseModel):
    decode_ms: float
    queue_ms: float = Field(description="waiting for a batch (longest over the request's windows)")
    inference_ms: float = Field(description="model calls (sum over the request's batches)")
    postprocess_ms: float
    total_ms: float


class Localization(BaseModel):
    time: float | None = Field(None, description="centre of the audio window, seconds from the start")
    score: float = Field(description="raw audio-visual cosine, the max of the heatmap x tau")
    sounding: bool = Field(
        description="score >= the model's sounding threshold and the audio louder than FNAC_SILENCE_DBFS"
    )
    audio_level_dbfs: float = Field(description="RMS level of the audio window, dB full scale (-120 = zeros)")
    heatmap: Heatmap
    boxes: list[Box]


class LocalizeResponse(Localization):
    model: str = Field(description="model id: name@sha256 prefix")
    width: int = Field(description="uploaded frame width in pixels")
    height: int = Field(description="uploaded frame height in pixels")
    timings: Timings


class SweepResponse(BaseModel):
    model: str
    width: int
    height: int
    duration: float = Field(description="seconds")
    stride: float = Field(description="seconds between window centres")
    windows: list[Localization]
    timings: Timings


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
    decode_workers: int = 0
    queue_depth: int = 0


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail
