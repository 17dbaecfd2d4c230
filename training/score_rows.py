"""What both `fnac score` engines share: the setup (options checked, model loaded, decode job and row
options), the model over batches of decoded windows, one item's output rows, and the run's summary."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fnac import contract, media, pipeline, postprocess, render
from fnac.runtime import ModelError, ModelRuntime
from model.atomic import atomic_path, atomic_write_bytes
from training.score_inputs import DecodeJob, Failure, Item, ScoreError


@dataclass
class Setup:
    """What every engine needs before the first item: the model, the decode job and the row options."""

    runtime: ModelRuntime
    model_info: dict[str, str]
    job: DecodeJob
    rows: dict  # keyword arguments of `_item_lines`


def prepare(
    model: str | Path | ModelRuntime,
    *,
    stride: float | None = None,
    batch_size: int = 16,
    png_dir: str | Path | None = None,
    png: str = "overlay",
    video_dir: str | Path | None = None,
    heatmap_decimals: int | None = 4,
    sounding_threshold: float | None = None,
    silence_dbfs: float = postprocess.SILENCE_DBFS,
    box_threshold: float = contract.BOX_THRESHOLD,
    box_min_area: float = contract.BOX_MIN_AREA,
    boxes: str = "sounding",
    ogl: bool | None = None,
    max_seconds: float = media.DEFAULT_MAX_SECONDS,
    max_windows: int = contract.MAX_WINDOWS,
    providers: list[str] | None = None,
    threads: int = 0,
) -> Setup:
    """Check the options, load the model and derive the decode job and row options (both engines); boxes and
    normalisation come from the fused map on a model with object-guided localization unless `ogl=False`.
    `video_dir`: also write each clip's overlay video there as `<id>.mp4` (`fnac.render`; implies a sweep
    every `render.DEFAULT_STRIDE` s unless `stride` is given)."""
    if video_dir is not None and stride is None:  # an overlay video interpolates between swept windows
        stride = render.DEFAULT_STRIDE
    if stride is not None and not (stride > 0 and math.isfinite(stride)):
        raise ScoreError(f"--stride must be a positive number of seconds, not {stride}")
    if batch_size < 1:
        raise ScoreError("--batch-size must be at least 1")
    if png not in ("overlay", "heatmap"):
        raise ScoreError(f"--png must be 'overlay' or 'heatmap', not {png!r}")
    if boxes not in pipeline.BOXES_MODES:
        raise ScoreError(f"--boxes must be 'sounding' or 'always', not {boxes!r}")
    runtime = model if isinstance(model, ModelRuntime) else _load_model(model, providers, threads)
    meta = runtime.metadata
    sounding_threshold, _ = pipeline.sounding_threshold_for(meta, sounding_threshold)
    try:
        ogl_alpha = pipeline.ogl_alpha_for(meta, ogl)
    except ValueError as exc:
        raise ScoreError(str(exc)) from None
    model_info = {"name": meta.model_name, "sha256": meta.weights_sha256 or runtime.file_sha256}
    png_path = Path(png_dir) if png_dir is not None else None
    if png_path is not None:
        png_path.mkdir(parents=True, exist_ok=True)
    video_path = Path(video_dir) if video_dir is not None else None
    if video_path is not None:
        video_path.mkdir(parents=True, exist_ok=True)
    job = DecodeJob(
        spec=pipeline.InputSpec.for_model(meta, max_seconds=max_seconds, max_windows=max_windows),
        stride=stride,
        keep_frames=png_path is not None and png == "overlay",
    )
    rows = dict(
        post=pipeline.PostOptions(
            tau=meta.tau,
            sounding_threshold=sounding_threshold,
            silence_dbfs=silence_dbfs,
            box_threshold=box_threshold,
            box_min_area=box_min_area,
            boxes=boxes,
            ogl_alpha=ogl_alpha,
        ),
        model=model_info,
        heatmap_decimals=heatmap_decimals,
        png_dir=png_path,
        png_kind=png,
        windowed=stride is not None,
        video_dir=video_path,
        render_limits=render.RenderLimits(max_seconds=max_seconds),
    )
    return Setup(runtime, model_info, job, rows)


def _load_model(path: str | Path, providers: list[str] | None, threads: int) -> ModelRuntime:
    try:
        return ModelRuntime(path, providers=providers, intra_op_threads=threads)
    except ModelError as exc:
        raise ScoreError(str(exc)) from None


def infer(
    runtime: ModelRuntime, batch: list[tuple[Item, pipeline.DecodedInput]], batch_size: int
) -> Iterable[tuple[Item, pipeline.DecodedInput, tuple[np.ndarray, np.ndarray, np.ndarray | None] | Failure]]:
    """Run every window of `batch` through the model in chunks of `batch_size`; per item, its heatmaps, scores
    and objectness maps (None without an OGL branch), or a Failure when the model raised on a chunk holding one
    of its windows."""
    if not batch:
        return
    images = np.stack([image for _, d in batch for image in d.images])
    audio = np.stack([window for _, d in batch for window in d.audio])
    heatmaps: list[np.ndarray | None] = []
    scores: list[np.ndarray | None] = []
    objectness: list[np.ndarray | None] = []
    errors: dict[int, str] = {}
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        try:
            heatmap, score, objects = runtime.run_maps(images[start:stop], audio[start:stop])
            heatmaps += list(heatmap)
            scores += list(score)
            objectness += [None] * (stop - start) if objects is None else list(objects)
        except Exception as exc:  # an ORT failure on one chunk fails the items in it, not the run
            message = f"{type(exc).__name__}: {exc}"
            heatmaps += [None] * (stop - start)
            scores += [None] * (stop - start)
            objectness += [None] * (stop - start)
            errors.update(dict.fromkeys(range(start, stop), message))
    offset = 0
    for item, decoded in batch:
        rows = range(offset, offset + len(decoded.times))
        offset = rows.stop
        failed = [errors[r] for r in rows if r in errors]
        if failed:
            yield item, decoded, Failure("inference_failed", failed[0])
        else:
            objects = None if not runtime.has_objectness else np.stack([objectness[r] for r in rows])
            yield (
                item,
                decoded,
                (np.stack([heatmaps[r] for r in rows]), np.array([scores[r] for r in rows]), objects),
            )


def item_rows(item: Item, decoded, outcome, setup: Setup) -> list[dict]:
    """The output rows of one item: its windows' rows, or one failure row (decoding, the model or writing
    its PNGs failed). Both engines write exactly these."""
    if isinstance(decoded, Failure):
        return [_failure_line(item, decoded, setup.model_info)]
    if isinstance(outcome, Failure):
        return [_failure_line(item, outcome, setup.model_info)]
    heatmaps, scores, objectness = outcome
    try:
        return _item_lines(item, decoded, heatmaps, scores, objectness, **setup.rows)
    except media.MediaError as exc:  # e.g. the overlay video could not be rendered (too long, corrupt frames)
        return [_failure_line(item, Failure(exc.code, exc.message), setup.model_info)]
    except Exception as exc:  # e.g. the PNG directory became unwritable: record, carry on
        failure = Failure("postprocess_failed", f"{type(exc).__name__}: {exc}")
        return [_failure_line(item, failure, setup.model_info)]


def _safe_name(item_id: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", item_id).strip(".") or "item"


def _item_lines(
    item: Item,
    decoded: pipeline.DecodedInput,
    heatmaps: np.ndarray,
    scores: np.ndarray,
    objectness: np.ndarray | None,
    *,
    post: pipeline.PostOptions,
    model: dict[str, str],
    heatmap_decimals: int | None,
    png_dir: Path | None,
    png_kind: str,
    windowed: bool,
    video_dir: Path | None = None,
    render_limits: render.RenderLimits | None = None,
) -> list[dict]:
    height, width = decoded.frame_size
    windows = [
        pipeline.localize_window(
            heatmap,
            float(score),
            decoded.audio[k],
            (height, width),
            post,
            time=time_s,
            objectness=None if objectness is None else objectness[k],
        )
        for k, (time_s, heatmap, score) in enumerate(zip(decoded.times, heatmaps, scores, strict=True))
    ]
    video_path = None
    if video_dir is not None and item.video is not None:  # the clip's overlay video, from these windows
        video_path = video_dir / (_safe_name(item.id) + ".mp4")
        with atomic_path(video_path) as tmp:
            render.render_video(
                item.video,
                windows,
                tmp,
                threshold=post.sounding_threshold,
                limits=render_limits or render.RenderLimits(),
                name=str(item.video),
            )
    lines = []
    for k, (time_s, heatmap, window) in enumerate(zip(decoded.times, heatmaps, windows, strict=True)):
        png_path = None
        if png_dir is not None:
            name = _safe_name(item.id) + (f"_w{k:04d}" if windowed else "") + ".png"
            png_path = png_dir / name
            normalized = window.display_map((height, width))
            if png_kind == "heatmap":
                png = postprocess.heatmap_png(normalized)
            else:
                png = render.overlay_png(
                    decoded.frames[k], normalized, window.boxes, sounding=window.sounding
                )
            atomic_write_bytes(png_path, png)
        line = {
            "id": item.id,
            "source": item.source,
            "time": None if time_s is None else round(float(time_s), 3),
        }
        if windowed:
            line |= {"window": k, "windows": len(decoded.times)}
        line |= {
            "width": int(width),
            "height": int(height),
            "score": round(window.score, 6),
            "sounding": window.sounding,
            "audio_level_dbfs": round(window.audio_level_dbfs, 2),
            "boxes": [
                {"x0": b.x0, "y0": b.y0, "x1": b.x1, "y1": b.y1, "score": round(b.score, 6)}
                for b in window.boxes
            ],
            "served_map": window.served_map,
        }
        if heatmap_decimals is not None:
            line["heatmap"] = np.round(heatmap.astype(np.float64), heatmap_decimals).tolist()
            if window.objectness is not None:
                line["objectness"] = np.round(window.objectness.astype(np.float64), heatmap_decimals).tolist()
        if png_path is not None:
            line["png"] = str(png_path)
        if video_path is not None:
            line["video"] = str(video_path)
        line |= {"model": model, "error": None}
        lines.append(line)
    return lines


def _failure_line(item: Item, failure: Failure, model: dict[str, str]) -> dict:
    return {
        "id": item.id,
        "source": item.source,
        "time": None,
        "width": None,
        "height": None,
        "score": None,
        "sounding": None,
        "boxes": None,
        "model": model,
        "error": {"code": failure.code, "message": failure.message},
    }


@dataclass
class Summary:
    """What a run did, counted as its items are written, and the line `fnac score` prints at the end."""

    items: int = 0  # scored (or failed) in this run
    windows: int = 0
    failures: int = 0
    skipped: int = 0  # already in OUT
    seconds: float = 0.0
    output: str = ""
    shard: str = ""

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def count(self, lines: list[dict], bar=None) -> None:
        """Count one item's written rows (a failure row, or its windows) and advance the progress bar."""
        self.items += 1
        if lines[0]["error"] is not None:
            self.failures += 1
        else:
            self.windows += len(lines)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(failed=self.failures, refresh=False)

    def line(self) -> str:
        rate = f"{self.items_per_second:.1f} items/s" if self.items else "nothing to do"
        shard = f" [shard {self.shard}]" if self.shard else ""
        return (
            f"scored {self.items - self.failures} items ({self.windows} windows), {self.failures} failed, "
            f"{self.skipped} already done; {rate} in {self.seconds:.1f} s -> {self.output}{shard}"
        )
