"""The localization result as the HTTP API answers it, and as `fnac.Localizer` and `fnac.Client` return it.

One schema for every door: the service's JSON body is `LocalizeResponse` (one window) or `SweepResponse`
(`stride`); errors are `ErrorBody`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field


class Box(BaseModel):
    """A region the sound comes from, in displayed pixels of the frame (x1, y1 exclusive)."""

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
        "upsampling) of the served map (served_map: the OGL fusion on a model with OGL); only with "
        "heatmap_png=true",
    )


class Objectness(BaseModel):
    """The OGL object branch's map as it left the network (models exported with one)."""

    shape: list[int] = Field(description="[h, w], the heatmap's")
    values: list[list[float]] = Field(description="row-major raw values, mean |layer4| of the ResNet-18")


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
    boxes: list[Box] = Field(
        description="best first; [] when the window is not sounding, unless requested with boxes=always"
    )
    served_map: Literal["av", "av_obj"] = Field(
        "av",
        description="the map the boxes and images come from: av (the audio-visual heatmap) or av_obj (object-"
        "guided localization: normalise(alpha x normalise(AV) + (1 - alpha) x normalise(objectness)), alpha "
        "from the model; ogl=false serves av)",
    )
    objectness: Objectness | None = Field(
        None, description="the OGL objectness map, on a model with an object branch; null otherwise"
    )

    @classmethod
    def from_window(cls, window, heatmap_png: str | None = None) -> Localization:
        """The JSON form of a `fnac.pipeline.WindowResult` (map values rounded to 6 decimals)."""
        objectness = None
        if window.objectness is not None:
            objectness = Objectness(
                shape=list(window.objectness.shape),
                values=np.round(window.objectness.astype(np.float64), 6).tolist(),
            )
        return cls(
            time=window.time,
            score=window.score,
            sounding=window.sounding,
            audio_level_dbfs=round(window.audio_level_dbfs, 2),
            heatmap=Heatmap(
                shape=list(window.heatmap.shape),
                values=np.round(window.heatmap.astype(np.float64), 6).tolist(),
                png=heatmap_png,
            ),
            boxes=[Box(x0=b.x0, y0=b.y0, x1=b.x1, y1=b.y1, score=b.score) for b in window.boxes],
            served_map=window.served_map,
            objectness=objectness,
        )


class LocalizeResponse(Localization):
    model: str = Field(description="model id: name@sha256 prefix")
    sounding_threshold: float = Field(description="the score at and above which a window is `sounding`")
    width: int = Field(description="frame width in pixels, as displayed")
    height: int = Field(description="frame height in pixels, as displayed")
    timings: Timings


class SweepResponse(BaseModel):
    model: str
    sounding_threshold: float = Field(description="the score at and above which a window is `sounding`")
    width: int
    height: int
    duration: float = Field(description="seconds")
    stride: float = Field(description="seconds between window centres")
    windows: list[Localization]
    timings: Timings


def response(
    windows: list[Localization],
    *,
    model: str,
    width: int,
    height: int,
    timings: Timings,
    sounding_threshold: float,
    stride: float | None = None,
    duration: float | None = None,
) -> LocalizeResponse | SweepResponse:
    """The answer to one request: a `SweepResponse` when it swept the clip (`stride`), else the single window
    as a `LocalizeResponse`."""
    common = {
        "model": model,
        "sounding_threshold": sounding_threshold,
        "width": width,
        "height": height,
        "timings": timings,
    }
    if stride is not None:
        return SweepResponse(duration=duration, stride=stride, windows=windows, **common)
    return LocalizeResponse(**windows[0].model_dump(), **common)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail
