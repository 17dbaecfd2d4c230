"""`fnac serve` lands here: settings from FNAC_* variables, overridden by explicit arguments, then uvicorn."""

from __future__ import annotations

import sys
from pathlib import Path

from service.config import Settings


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

    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise TypeError(f"serve() got unknown settings {unknown}; known: {sorted(Settings.model_fields)}")
    explicit = {"model": model, "host": host, "port": port, **overrides}
    settings = Settings(**{key: value for key, value in explicit.items() if value is not None})
    logs.configure(settings.log_level, settings.log_json)
    if not Path(settings.model).is_file():
        sys.exit(
            f"fnac serve: model file {str(settings.model)!r} not found. Pass --model path/to/model.onnx or set "
            "FNAC_MODEL (export one with `fnac export`)."
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        server_header=False,
    )


if __name__ == "__main__":
    serve()
