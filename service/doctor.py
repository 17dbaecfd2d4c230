"""`fnac doctor`: what this installation can run on, and why not the GPU when it cannot.

Versions (fnac, onnxruntime and which build, av, torch when installed), the providers the build offers and
the ones that really load (a tiny session each), the NVIDIA GPU and driver, the CUDA libraries the build
would open, the default model's metadata, and one verdict line (fnac.gpu.verdict). Needs only the serving
install: no torch, no onnx package.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

from fnac import gpu

PACKAGES = ("fnac", "onnxruntime", "onnxruntime-gpu", "av", "numpy", "fastapi", "torch")


def package_versions() -> dict[str, str | None]:
    """Installed distribution versions (None when absent), without importing the packages."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def model_summary(path: str | Path) -> dict:
    """The model's contract metadata, or the reason it cannot be read."""
    import onnxruntime as ort

    from fnac.runtime import ModelError, ModelMetadata

    path = Path(path)
    if not path.is_file():
        return {"path": str(path), "error": "file not found"}
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=[gpu.CPU])
        meta = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map, str(path))
    except ModelError as exc:
        return {"path": str(path), "error": str(exc)}
    except Exception as exc:  # ORT's own exception types for unreadable files
        return {"path": str(path), "error": f"could not load: {str(exc).splitlines()[0]}"}
    return {
        "path": str(path),
        "model_name": meta.model_name,
        "precision": meta.precision,
        "image_size": meta.image_size,
        "sample_rate": meta.sample_rate,
        "clip_seconds": meta.clip_seconds,
        "heatmap_size": meta.heatmap_size,
        "sounding_threshold": meta.sounding_threshold,
        "fnac_version": meta.fnac_version,
        "weights_sha256": meta.weights_sha256[:12],
        "size_mb": round(path.stat().st_size / 1e6, 2),
    }


def report(model: str | Path | None = None) -> dict:
    """Everything `fnac doctor` prints, as one JSON-ready dict."""
    import onnxruntime as ort

    from service.config import Settings

    build = gpu.ort_build()
    info = gpu.detect_gpu()
    preloaded = gpu.preload_cuda_libraries(build) if info.visible else []  # as the service would
    libraries = gpu.cuda_libraries(build)
    previous = ort.get_default_logger_severity() if hasattr(ort, "get_default_logger_severity") else 2
    ort.set_default_logger_severity(
        4
    )  # a provider that cannot load is reported below, not logged as an error
    try:
        loads = gpu.loaded_providers(build)
    finally:
        ort.set_default_logger_severity(previous)
    loaded = [p for p, ok in loads.items() if ok]
    # The chain the service would ask for on this machine, judged by what really loads.
    serving = [p for p in (gpu.TENSORRT, gpu.CUDA) if loads.get(p)] if info.visible else []
    decision = gpu.verdict(info, build, [*serving, gpu.CPU], libraries)
    return {
        "verdict": decision.line,
        "status": decision.status,
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "onnxruntime": {
            "package": build.package,
            "version": build.version,
            "cuda_version": build.cuda_version,
        },
        "providers": {"available": build.available, "loaded": loaded},
        "gpu": gpu.as_dict(info),
        "cuda_libraries": libraries,
        "preloaded": preloaded,
        "model": model_summary(model or Settings().model),
        "overlay_painter": overlay_painter(),
    }


def overlay_painter() -> str:
    """Which inner loop paints overlay videos: the compiled one, or numpy where the install had no C compiler."""
    from fnac.render import painter

    if painter._blend is not None:
        return "compiled (fnac.render._blend)"
    return "numpy (fnac.render._blend was not built: no C compiler at install; about twice the painting time)"


def format_text(data: dict) -> str:
    """The report for people: one aligned line per fact, the verdict last."""
    packages = ", ".join(f"{k} {v}" for k, v in data["packages"].items() if v)
    ort = data["onnxruntime"]
    gpu_data = data["gpu"]
    if gpu_data["visible"]:
        names = ", ".join(str(g.get("name") or f"GPU {g['index']}") for g in gpu_data["gpus"])
        gpu_line = f"{names}; driver {gpu_data['driver_version'] or '?'}, supports CUDA {gpu_data['cuda_version'] or '?'}"
    else:
        gpu_line = "none visible"
    libraries = ", ".join(
        f"{k} {v['via'] if v else 'absent (optional)' if k in gpu.OPTIONAL_LIBRARIES else 'MISSING'}"
        for k, v in data["cuda_libraries"].items()
    )
    model = data["model"]
    model_line = (
        f"{model['path']}: {model['error']}"
        if "error" in model
        else f"{model['model_name']} ({model['precision']}, {model['image_size']} px, {model['sample_rate']} Hz, "
        f"{model['clip_seconds']:g} s, {model['size_mb']} MB) {model['path']}"
    )
    rows = [
        ("python", data["python"]),
        ("packages", packages),
        ("onnxruntime", f"{ort['package']} {ort['version']} (built for CUDA {ort['cuda_version'] or '-'})"),
        ("providers offered", ", ".join(data["providers"]["available"])),
        ("providers loading", ", ".join(data["providers"]["loaded"]) or "none"),
        ("NVIDIA GPU", gpu_line),
        ("CUDA libraries", libraries or "- (CPU build)"),
        ("default model", model_line),
        ("overlay painter", data["overlay_painter"]),
    ]
    width = max(len(key) for key, _ in rows)
    lines = [f"{key:<{width}}  {value}" for key, value in rows]
    return "\n".join([*lines, "", f"verdict: {data['verdict']}"])


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--model", help="ONNX model to describe (default: FNAC_MODEL or the bundled model)")


def run(args) -> int:
    """Print the report; exit status 1 when a GPU is present but unused, else 0."""
    if args.model and not Path(args.model).is_file():
        from fnac.errors import FnacError

        raise FnacError(
            f"model file {args.model!r} not found (leave out --model for FNAC_MODEL or the bundled one)"
        )
    data = report(args.model)
    print(json.dumps(data, indent=2) if args.json else format_text(data))
    return 1 if data["status"] == "degraded" else 0
