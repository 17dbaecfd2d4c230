"""Builds the FastAPI app; the lifespan loads and warms the model, starts the batcher and decode workers."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from fnac.gpu import GpuOptions
from fnac.pipeline import InputSpec, sounding_threshold_for
from fnac.runtime import ModelError, ModelRuntime
from service.api.deps import ServiceState
from service.api.routes import demo, health, localize, model
from service.batcher import MicroBatcher
from service.config import Settings
from service.decoding import DecodePool
from service.errors import install_handlers
from service.middleware import BodyLimitMiddleware, RequestContextMiddleware

log = logging.getLogger("fnac.service")


async def load_service(settings: Settings) -> ServiceState:
    """Load + warm the model, start the batcher and the decode workers."""
    runtime = await asyncio.to_thread(
        ModelRuntime,
        settings.model,
        providers=settings.providers or None,
        intra_op_threads=settings.intra_op_threads,
        inter_op_threads=settings.inter_op_threads,
        spinning=settings.ort_spinning,
        gpu_options=gpu_options(settings),
        io_binding=settings.io_binding,
    )
    verdict = await asyncio.to_thread(runtime_verdict, runtime.providers)
    log.log(
        logging.WARNING if verdict.status == "degraded" else logging.INFO,
        "runtime: %s",
        verdict.line,
        extra={"runtime_status": verdict.status},
    )
    if settings.require_gpu and not verdict.on_gpu:
        raise ModelError(f"FNAC_REQUIRE_GPU is set and no GPU provider runs the model: {verdict.line}")
    await asyncio.to_thread(runtime.warm_up, tuple(sorted({1, settings.max_batch})))
    meta = runtime.metadata
    threshold, source = sounding_threshold_for(meta, settings.sounding_threshold)
    spec = InputSpec.for_model(
        meta,
        max_seconds=settings.max_clip_seconds,
        max_pixels=settings.max_image_pixels,
        max_windows=settings.max_windows,
    )
    batcher = MicroBatcher(
        runtime.run_maps,  # objectness too, on a model with object-guided localization
        max_batch=settings.max_batch,
        max_wait_ms=settings.max_wait_ms,
        dispatch_when_idle=settings.dispatch_when_idle,
        queue_size=settings.queue_size,
        lanes=settings.inference_lanes,
    )
    await batcher.start()
    pool = DecodePool(
        settings.decode_workers,
        settings.decode_timeout_s,
        backlog=settings.queue_size,
        malloc=(settings.malloc_arena_max, settings.malloc_mmap_threshold_kb),
        max_jobs=settings.decode_max_jobs,
        shared_bytes=round(settings.decode_shared_mb * 2**20),
    )
    await pool.start()
    log.info(
        "serving %s (%s, %d Hz, %.1f s clips, %d px) on %s",
        runtime.model_id,
        runtime.path,
        meta.sample_rate,
        meta.clip_seconds,
        meta.image_size,
        runtime.providers,
        extra={"providers": runtime.providers, "model": runtime.model_id},
    )
    return ServiceState(settings, runtime, batcher, pool, spec, threshold, source, verdict)


def gpu_options(settings: Settings) -> GpuOptions:
    """The GPU providers' settings (device, arena, TensorRT cache) from FNAC_* settings."""
    return GpuOptions(
        device_id=settings.cuda_device,
        mem_limit_mb=settings.gpu_mem_limit_mb,
        arena_extend=settings.gpu_arena_extend,
        trt_cache_dir=str(settings.trt_cache_dir) if settings.trt_cache_dir else None,
    )


def preflight_gpu(settings: Settings):
    """Before the server starts: the verdict for the providers the settings ask for, judged by a tiny session
    (so FNAC_REQUIRE_GPU can refuse in one line, without loading the model first). Raises ModelError for a
    provider this build lacks or a GPU that is not there."""
    from fnac import gpu
    from fnac.runtime import choose_providers

    chosen = choose_providers(settings.providers or None)
    info = gpu.detect_gpu()
    if info.visible:
        gpu.preload_cuda_libraries(gpu.ort_build())  # as the runtime will
    try:
        with_options = gpu.provider_options(chosen, gpu_options(settings), info)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    loaded, _ = gpu.probe_providers(with_options)
    return runtime_verdict(loaded)


def runtime_verdict(loaded: list[str]):
    """The same verdict as `fnac doctor`, for the providers the service's session really got."""
    from fnac import gpu

    build = gpu.ort_build()
    info = gpu.detect_gpu()
    return gpu.verdict(info, build, loaded, gpu.cuda_libraries(build) if info.visible else {})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            app.state.service = await load_service(settings)
        except ModelError as exc:
            log.error("cannot start: %s", exc)
            raise
        try:
            yield
        finally:
            # uvicorn has already finished the in-flight requests (graceful shutdown) when we get here.
            service = app.state.service
            app.state.service = None
            await service.batcher.stop()
            service.close_pools()
            log.info("stopped")

    # /docs and /redoc load their scripts and styles from this package, not from a CDN: they work offline.
    app = FastAPIOffline(
        title="FNAC sound-source localization",
        description="Where in the frame does the sound come from? POST a clip, or a frame + audio, to /localize.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.service = None
    install_handlers(app)
    app.include_router(localize.router)
    app.include_router(model.router)
    app.include_router(health.router)
    app.include_router(demo.router)
    # Added last = outermost: request ids and metrics see every response, 413s included.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_upload_bytes,
        idle_timeout_s=settings.upload_idle_timeout_s,
        total_timeout_s=settings.upload_timeout_s,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "X-FNAC-Score", "X-FNAC-Sounding", "X-FNAC-Model"],
        )
    app.add_middleware(RequestContextMiddleware)
    return app
