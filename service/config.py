"""Service settings: environment variables with the `FNAC_` prefix (e.g. FNAC_MODEL, FNAC_PORT).

Everything about the model itself (sample rate, clip length, image size, tau, sounding threshold) comes from
the ONNX metadata, not from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fnac import contract

DEFAULT_MODEL = contract.default_model_path()


def _comma_list(value):
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FNAC_", extra="ignore")

    model: Path = Field(DEFAULT_MODEL, description="ONNX model to serve")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    # ONNX Runtime. Providers: comma list of short or full names ("cuda,cpu", "CPUExecutionProvider");
    # empty = auto (TensorRT -> CUDA -> CPU when a GPU is visible, else CPU).
    providers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    intra_op_threads: int = Field(0, ge=0, description="0 = ONNX Runtime's default")
    inter_op_threads: int = Field(0, ge=0, description="0 = ONNX Runtime's default")
    require_gpu: bool = Field(
        False, description="refuse to start (one-line reason) unless a GPU execution provider really loads"
    )
    cuda_device: int = Field(
        0, ge=0, description="GPU to run on, counted among the ones CUDA_VISIBLE_DEVICES lets through"
    )
    gpu_mem_limit_mb: int = Field(
        0, ge=0, description="cap on the CUDA provider's memory arena in MiB (0 = no cap)"
    )
    gpu_arena_extend: Literal["next_power_of_two", "same_as_requested"] = Field(
        "next_power_of_two",
        description="how the CUDA arena grows: doubling (fewer allocations) or exactly what is asked (tighter)",
    )
    trt_cache_dir: Path | None = Field(
        None,
        description="folder for TensorRT's built engines (reused across restarts); TensorRT is used only "
        "when its libraries are installed",
    )
    io_binding: Literal["auto", "on", "off"] = Field(
        "auto", description="bind inputs and outputs to device memory: auto = on for GPU providers only"
    )
    ort_spinning: bool = Field(
        False,
        description="let ONNX Runtime's idle threads busy-wait (its default); off, they yield the CPU to "
        "decoding and HTTP work in this process",
    )

    # Memory over days (service/memory.py, docs/RELIABILITY.md).
    malloc_arena_max: int = Field(
        2,
        ge=0,
        description="glibc malloc arenas in the server and decoders (0 = glibc's default, 8 per core)",
    )
    malloc_mmap_threshold_kb: int = Field(
        1024,
        ge=0,
        description="blocks this large or larger are mmapped and returned on free (0 = glibc's dynamic default); "
        "smaller ones (uploads, frames, audio, model inputs) are reused from the heap, which saves the page "
        "faults of mapping them afresh on every request",
    )

    # Micro-batching and overload.
    max_batch: int = Field(8, ge=1)
    max_wait_ms: float = Field(5.0, ge=0)
    inference_lanes: int = Field(
        1,
        ge=1,
        description="batches that run at once; on a CPU, lanes x FNAC_INTRA_OP_THREADS = cores keeps every "
        "core busy while other work comes and goes",
    )
    queue_size: int = Field(64, ge=1, description="inputs waiting for inference before answering 429")
    dispatch_when_idle: bool = Field(
        True,
        description="run a lone input at once when no other request is uploading or decoding, instead of "
        "waiting max_wait_ms for company",
    )

    # Untrusted input.
    max_upload_mb: float = Field(50.0, gt=0, description="request body limit, enforced while streaming")
    max_parts: int = Field(8, ge=1, description="multipart parts per request")
    upload_idle_timeout_s: float = Field(
        30.0, gt=0, description="longest wait for the next piece of a request body before answering 408"
    )
    upload_timeout_s: float = Field(300.0, gt=0, description="longest time to receive a whole request body")
    decode_workers: int = Field(2, ge=1)
    decode_timeout_s: float = Field(30.0, gt=0)
    decode_max_jobs: int = Field(
        10_000,
        ge=0,
        description="jobs a decode worker answers before a fresh process takes its place, off the request path, "
        "so the decoders' heaps cannot grow over days (0 = never)",
    )
    decode_shared_mb: float = Field(
        16.0,
        ge=0,
        description="shared memory between the server and each decode (and render) worker, through which uploads go in "
        "and decoded arrays come out (pages are used only as jobs touch them); a job that does not fit, or "
        "0, goes over the pipe",
    )
    max_clip_seconds: float = Field(300.0, gt=0)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_windows: int = Field(contract.MAX_WINDOWS_PER_REQUEST, ge=1, description="windows per sweep")

    # Overlay videos (format=mp4): rendered in worker processes of their own, started with the first one.
    render_workers: int = Field(1, ge=1, description="processes rendering overlay videos")
    render_timeout_s: float = Field(300.0, gt=0, description="longest time one overlay video may take")
    render_max_seconds: float = Field(
        120.0, gt=0, description="longest overlay video, seconds (the clip, or its start..end stretch)"
    )
    render_max_frames: int = Field(7200, ge=1, description="most frames in one overlay video")

    # Post-processing and decisions.
    box_threshold: float = Field(
        contract.BOX_THRESHOLD, ge=0, le=1, description="on the min-max normalised heatmap"
    )
    box_min_area: float = Field(
        contract.BOX_MIN_AREA, ge=0, le=1, description="smallest box component, fraction of frame"
    )
    silence_dbfs: float = Field(
        contract.SILENCE_DBFS,
        le=0,
        description="audio windows whose RMS level is at or below this (dBFS) are never `sounding`",
    )
    sounding_threshold: float | None = Field(None, description="overrides the model's calibrated threshold")

    # HTTP.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_level: str = "info"
    log_json: bool = True
    shutdown_timeout_s: float = Field(30.0, ge=0, description="grace period for in-flight requests")

    @field_validator("providers", "api_keys", "cors_origins", mode="before")
    @classmethod
    def _split(cls, value):
        return _comma_list(value)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
