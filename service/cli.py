"""`fnac serve`: the HTTP service on an exported ONNX model.

Starts the FastAPI service on ONNX Runtime. Without --model it serves FNAC_MODEL or the bundled default model.
Every FNAC_* environment setting applies (service/config.py lists them); the options here override them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fnac.errors import FnacError
from service.config import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    defaults = Settings.model_fields
    p.add_argument("--model", help="ONNX model to serve (default: FNAC_MODEL, else the bundled model)")
    p.add_argument("--host", help=f"bind address (default: FNAC_HOST, else {defaults['host'].default})")
    p.add_argument("--port", type=int, help=f"port (default: FNAC_PORT, else {defaults['port'].default})")
    p.add_argument(
        "--providers",
        help="comma list of ONNX Runtime providers such as cuda,cpu, or auto (default: FNAC_PROVIDERS, else "
        "auto: TensorRT, CUDA then CPU when a GPU is visible, else CPU)",
    )


def run(args: argparse.Namespace) -> int:
    overrides = {"providers": args.providers} if args.providers is not None else {}
    serve(model=args.model, host=args.host, port=args.port, **overrides)
    return 0


def serve(
    model: str | Path | None = None, host: str | None = None, port: int | None = None, **overrides
) -> None:
    """Run the HTTP service until SIGINT/SIGTERM (in-flight requests finish first).

    Arguments left as None keep their FNAC_* environment value or default; `overrides` take any other
    Settings field by name (e.g. `max_batch=16, providers=["cuda", "cpu"]`).
    """
    import uvicorn

    from service import logs
    from service.main import create_app
    from service.memory import tune_malloc

    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise TypeError(f"serve() got unknown settings {unknown}; known: {sorted(Settings.model_fields)}")
    explicit = {"model": model, "host": host, "port": port, **overrides}
    settings = Settings(**{key: value for key, value in explicit.items() if value is not None})
    logs.configure(settings.log_level, settings.log_json)
    check_model_file(Path(settings.model))
    # Before uvicorn, ORT and the thread pools start any threads (service/memory.py says why).
    malloc = tune_malloc(settings.malloc_arena_max, settings.malloc_mmap_threshold_kb)
    if settings.require_gpu:
        from fnac.runtime import ModelError
        from service.main import preflight_gpu

        try:
            verdict = preflight_gpu(settings)
        except ModelError as exc:
            raise FnacError(f"FNAC_REQUIRE_GPU is set: {exc}") from None
        if not verdict.on_gpu:
            raise FnacError(f"FNAC_REQUIRE_GPU is set, refusing to serve on the CPU: {verdict.line}")
    logging.getLogger("fnac.memory").info("glibc malloc settings: %s", malloc or "unchanged (not glibc)")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        server_header=False,
    )


def check_model_file(path: Path) -> None:
    """Refuse, in one line, a model the service cannot load: a missing file, or a checkpoint not exported yet."""
    if path.suffix in (".pt", ".pth") and path.is_file():
        raise FnacError(
            f"{path} is a checkpoint; the service runs exported ONNX models: export it first: "
            f"fnac export {path} -o {path.with_suffix('.onnx')}"
        )
    if not path.is_file():
        raise FnacError(
            f"model file {str(path)!r} not found; pass --model path/to/model.onnx or set FNAC_MODEL (make one "
            "with `fnac export`)"
        )


if __name__ == "__main__":
    serve()
