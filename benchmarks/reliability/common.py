"""What the reliability parts share: the small limits of the servers they start, the model those serve, two
good requests, and counters read from a server's /metrics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from benchmarks import malformed

ROOT = Path(__file__).resolve().parents[2]

# Limits for the servers these checks start: small, so that limit-breaking uploads stay cheap to build.
SMALL_LIMITS = malformed.Limits(
    max_upload_bytes=2 * 2**20, max_parts=8, max_clip_seconds=20.0, max_image_pixels=4_000_000, max_windows=16
)


def limit_env(limits: malformed.Limits) -> dict[str, str]:
    return {
        "FNAC_MAX_UPLOAD_MB": f"{limits.max_upload_bytes / 2**20:g}",
        "FNAC_MAX_PARTS": str(limits.max_parts),
        "FNAC_MAX_CLIP_SECONDS": f"{limits.max_clip_seconds:g}",
        "FNAC_MAX_IMAGE_PIXELS": str(limits.max_image_pixels),
        "FNAC_MAX_WINDOWS": str(limits.max_windows),
    }


# ---------------------------------------------------------------------------------------------- server


def resolve_model(requested: str | None, work_dir: Path) -> tuple[Path, str]:
    """--model, else FNAC_MODEL / the bundled model, else a random network of the bundled model's shape."""
    from service.config import Settings

    if requested:
        if not Path(requested).is_file():
            raise SystemExit(f"model file {requested!r} not found")
        return Path(requested), requested
    configured = Settings().model
    if Path(configured).is_file():
        return Path(configured), str(configured)
    import torch

    from model.config import FNACConfig
    from model.export import export_onnx
    from model.fnac import FNAC

    torch.manual_seed(0)
    config = FNACConfig(width=16, dim=128, image_size=128)
    path = work_dir / "fnac-random-w16-d128-s128.onnx"
    export_onnx(FNAC(config).eval(), path, {"model_name": "fnac-random-w16", "training_data": "random init"})
    return path, f"{configured} missing; random FNAC width 16, dim 128, 128 px (the bundled model's shape)"


def good_requests() -> list[tuple[str, dict]]:
    """Two valid requests a user sends: a 4 s 160x120 H.264/AAC clip, and a 640x360 JPEG + 3 s 44.1 kHz WAV."""
    from training.bench_service import request_files

    clip = malformed.encode_clip(4.0, size=(160, 120), audio_rate=44100)
    return [("clip", {"video": ("clip.mp4", clip, "video/mp4")}), ("image+audio", request_files(3.0))]


def metric_value(base: str, name: str) -> float:
    """Sum of a Prometheus counter over its labels, from /metrics."""
    import httpx

    total = 0.0
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def status_counts(base: str, route: str | None = None) -> Counter:
    """fnac_requests_total by status (of one route, or all), from /metrics."""
    import httpx

    counts: Counter = Counter()
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("fnac_requests_total{") and (route is None or f'route="{route}"' in line):
            status = line.split('status="', 1)[1].split('"', 1)[0]
            counts[status] += float(line.rsplit(" ", 1)[1])
    return counts
