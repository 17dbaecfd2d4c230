"""`fnac score --model M.onnx INPUTS… -o OUT.jsonl`: score videos or frame + audio pairs offline, to JSONL.

INPUTS are any mix of
- video files (.mp4 .mkv .webm .mov .avi);
- directories: a dataset directory (``frames/<id>.jpg`` + ``audio/<id>.wav``, as `fnac prepare` and `fnac synth`
  write) gives frame + audio pairs; any other directory is searched recursively for videos;
- CSV / TSV lists with a header naming ``video`` or ``image,audio`` columns (optional ``id``); relative paths
  are relative to the list's folder.

Every item gets a stable id (the list's ``id``, else the file stem; a directory disambiguates repeated stems by
their relative path) and one JSON line: ``id``, ``source``, ``time`` (clips: the window centre in seconds;
``null`` for a frame + audio pair without ``--stride``), ``width``/``height`` of the frame as displayed (a
video's rotate tag and an image's EXIF orientation applied), ``score`` (raw cosine), ``sounding``, ``boxes``
in displayed pixels (``x1``/``y1`` exclusive; ``[]`` for a window that is not sounding unless ``--boxes
always``), ``served_map`` (the map boxes and PNGs come from: ``av``, or ``av_obj`` on a model with object-guided
localization unless ``--no-ogl``), ``heatmap`` (the model's raw h x w map, cosine / tau, rounded; with OGL also
``objectness``, the object branch's raw map), ``png`` (when written), ``video`` (with ``--video-out DIR``:
the clip's overlay MP4 ``DIR/<id>.mp4``, drawn from these windows by `fnac.render`), ``model`` and ``error``. With ``--stride S`` each
item gives one line per window (every S seconds, see `fnac.media.sweep_times`) with ``window`` and
``windows``. An item that cannot be scored gets a line with ``error: {code, message}``: it is recorded, never
skipped, and the run carries on.

Resuming: OUT is read first and ids already there are skipped, so re-running the same command finishes an
interrupted run. A line cut short by a kill is removed, and so are the lines of an item whose windows were not
all written. ``--retry-failed`` drops the error lines and tries those items again.

Many machines: ``--engine ray`` runs the same scoring on Ray Data (`training.score_ray`: decoding as CPU
tasks, the model in an actor pool, on an embedded cluster or the one at ``--ray-address``; the ``scale``
extra), which reschedules lost work and writes JSONL or Parquet to any pyarrow filesystem. ``--shard i/n``
scores every n-th item of the sorted id list, starting at item i (0-based), for job arrays of a batch
scheduler; use the same INPUTS on every machine and one OUT per shard.

Decoding, the model's batches and post-processing are the stages of `fnac.pipeline`, the same ones the HTTP
service runs. Only numpy, onnxruntime, PyAV, Pillow, tqdm and the torch-free `fnac` package are used: this runs
in the serving image, where torch is not installed.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fnac import contract, media, pipeline, postprocess, render
from fnac.errors import FnacError
from fnac.runtime import ModelError, ModelRuntime
from model.atomic import atomic_path, atomic_write_bytes
from training.layout import VIDEO_SUFFIXES, frames_and_audio
from training.prepare import find_videos

log = logging.getLogger("fnac.score")

LIST_SUFFIXES = (".csv", ".tsv", ".tab")


class ScoreError(FnacError):
    """A user mistake (bad option, unreadable list, repeated ids): one line, exit status 2."""


# ---------------------------------------------------------------------------------------------- items


@dataclass(frozen=True)
class Item:
    """One thing to score: a video, or a frame + audio pair. `problem` is a failure known before decoding."""

    id: str
    video: Path | None = None
    image: Path | None = None
    audio: Path | None = None
    problem: tuple[str, str] | None = None  # (code, message)

    @property
    def source(self) -> dict[str, str]:
        if self.video is not None:
            return {"video": str(self.video)}
        return {k: str(v) for k, v in (("image", self.image), ("audio", self.audio)) if v is not None}


def find_items(inputs: Sequence[str | Path]) -> list[Item]:
    """Items of every input (video file, directory or CSV/TSV list), sorted by id; ids must be unique."""
    items: list[Item] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            items += _dataset_items(path) if _is_dataset_dir(path) else _video_dir_items(path)
        elif path.suffix.lower() in LIST_SUFFIXES:
            items += _list_items(path)
        elif path.suffix.lower() in VIDEO_SUFFIXES or path.is_file():
            # A file named here is tried as a video whatever its extension, as the service tries any upload;
            # a missing one is a per-item failure, found at decode.
            items.append(Item(path.stem, video=path))
        else:
            raise ScoreError(f"input not found: {path}")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise ScoreError(
            f"item ids repeat across the inputs ({', '.join(repeated[:5])}); give them ids in a CSV list"
        )
    return sorted(items, key=lambda item: item.id)


def _is_dataset_dir(path: Path) -> bool:
    return (path / "frames").is_dir() and (path / "audio").is_dir()


def _dataset_items(root: Path) -> list[Item]:
    """frames/<id>.jpg + audio/<id>.wav pairs; an id with only one of the two is a failed item."""
    frames, audio = frames_and_audio(root)
    items = []
    for item_id in sorted(frames.keys() | audio.keys()):
        problem = None
        if item_id not in audio:
            problem = ("missing_audio", f"no audio/{item_id}.* beside {frames[item_id]}")
        elif item_id not in frames:
            problem = ("missing_frame", f"no frames/{item_id}.* beside {audio[item_id]}")
        items.append(Item(item_id, image=frames.get(item_id), audio=audio.get(item_id), problem=problem))
    return items


def _video_dir_items(root: Path) -> list[Item]:
    return [Item(job.id, video=job.video) for job in find_videos(root)]


def _list_items(path: Path) -> list[Item]:
    """Rows of a CSV/TSV list with a header: ``video`` or ``image,audio`` columns, optional ``id``."""
    if not path.is_file():
        raise ScoreError(f"input list not found: {path}")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [
            row for row in csv.reader(f, delimiter=delimiter) if row and not row[0].lstrip().startswith("#")
        ]
    if not rows:
        raise ScoreError(f"{path}: the list is empty")
    header = [name.strip().lower() for name in rows[0]]
    has_video = "video" in header
    has_pair = "image" in header and "audio" in header
    if not has_video and not has_pair:
        raise ScoreError(f"{path}: the header must name a 'video' column or 'image' and 'audio' columns")

    def column(row: list[str], name: str) -> str:
        return row[header.index(name)].strip() if name in header and header.index(name) < len(row) else ""

    def resolve(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else path.parent / p

    items = []
    for line, row in enumerate(rows[1:], start=2):
        video, image, audio = column(row, "video"), column(row, "image"), column(row, "audio")
        if video:
            item = Item("", video=resolve(video))
        elif image or audio:
            item = Item(
                "",
                image=resolve(image) if image else None,
                audio=resolve(audio) if audio else None,
                problem=None
                if image and audio
                else ("incomplete_row", f"{path}:{line} lacks an image or audio"),
            )
        else:
            raise ScoreError(f"{path}:{line}: the row names no video and no image/audio")
        stem_of = item.video or item.image or item.audio
        item_id = column(row, "id") or stem_of.stem
        items.append(Item(item_id, item.video, item.image, item.audio, item.problem))
    return items


def shard(items: Sequence[Item], index: int, count: int) -> list[Item]:
    """Every `count`-th item of the id-sorted list, starting at `index`: the shards partition the list."""
    ordered = sorted(items, key=lambda item: item.id)
    return ordered[index::count]


def parse_shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match or int(match[2]) < 1 or int(match[1]) >= int(match[2]):
        raise ScoreError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4), not {text!r}")
    return int(match[1]), int(match[2])


# ---------------------------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class DecodeJob:
    """What decoding an item needs: the pipeline's input spec, the sweep stride, whether to keep frames."""

    spec: pipeline.InputSpec
    stride: float | None = None
    keep_frames: bool = False  # the full-size displayed frames (overlay PNGs)


@dataclass(frozen=True)
class Failure:
    code: str
    message: str


def decode_item(item: Item, job: DecodeJob) -> pipeline.DecodedInput | Failure:
    """Decode one item with the pipeline's decode stage; never raises for a bad input (returns a `Failure`)."""
    if item.problem:
        return Failure(*item.problem)
    try:
        for path in (item.video, item.image, item.audio):
            if path is not None and not Path(path).is_file():
                raise media.MediaError("file_not_found", f"'{path}' does not exist")
        options = {"stride": job.stride, "keep_frames": job.keep_frames}
        if item.video is not None:
            return pipeline.decode_video(item.video, job.spec, name=str(item.video), **options)
        return pipeline.decode_image_audio(
            item.image,
            item.audio,
            job.spec,
            image_name=str(item.image),
            audio_name=str(item.audio),
            **options,
        )
    except media.MediaError as exc:
        return Failure(exc.code, exc.message)
    except MemoryError:
        return Failure("out_of_memory", f"decoding '{item.id}' ran out of memory")
    except Exception as exc:  # a corrupt file can surface as anything from FFmpeg or Pillow
        return Failure("decode_failed", f"{type(exc).__name__}: {exc}")


def _decode_in_order(
    items: Sequence[Item], job: DecodeJob, workers: int, pool: str
) -> Iterator[tuple[Item, pipeline.DecodedInput | Failure]]:
    """`decode_item` over `items` with the pipeline's ordered parallel decoding; a decoder that crashes its
    process fails that item (``decoder_crashed``)."""

    def crashed(item: Item) -> Failure:
        return Failure("decoder_crashed", f"the decoder process died while decoding '{item.id}'")

    yield from pipeline.decode_in_order(
        items, functools.partial(decode_item, job=job), workers=workers, pool=pool, on_crash=crashed
    )


# ---------------------------------------------------------------------------------------------- output file


@dataclass
class Existing:
    """What a previous run left in OUT."""

    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    dropped_lines: int = 0  # partial, unreadable, incomplete or retried lines removed


@dataclass(frozen=True)
class _Line:
    start: int
    end: int
    id: str | None  # None: not a JSON object with a string id
    failed: bool = False
    window: int | None = None
    windows: int | None = None


def _scan_lines(path: Path) -> tuple[list[_Line], int]:
    """Every complete line of a JSONL file (byte range and what resuming needs), and the file size.

    Bytes after the last newline are a line cut short by a kill: not listed. Streams; records are not kept.
    """
    lines: list[_Line] = []
    offset = 0
    with path.open("rb") as f:
        for raw in f:
            start, offset = offset, offset + len(raw)
            if not raw.endswith(b"\n"):
                break
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                lines.append(_Line(start, offset, None))
                continue
            windows = record.get("windows")
            lines.append(
                _Line(
                    start,
                    offset,
                    record["id"],
                    failed=bool(record.get("error")),
                    window=record.get("window"),
                    windows=windows if isinstance(windows, int) else None,
                )
            )
    return lines, offset


def _item_status(lines: list[_Line]) -> str:
    """'failed', 'done' or 'incomplete' (a sweep whose windows were not all written)."""
    if any(line.failed for line in lines):
        return "failed"
    expected = lines[0].windows
    if expected is None:
        return "done"
    return "done" if len({line.window for line in lines}) >= expected else "incomplete"


def _group(lines: list[_Line]) -> dict[str, list[_Line]]:
    by_id: dict[str, list[_Line]] = {}
    for line in lines:
        if line.id is not None:
            by_id.setdefault(line.id, []).append(line)
    return by_id


def _copy_ranges(
    source: Path, target: Path, ranges: Iterable[tuple[int, int]], *, append: bool = False
) -> None:
    """Copy byte ranges of `source` into `target`: appended to an open-ended target, or as a new file written
    to a temporary name and renamed (a reader never sees a partial file)."""
    if append:
        with source.open("rb") as src, target.open("ab") as dst:
            for start, end in ranges:
                src.seek(start)
                dst.write(src.read(end - start))
        return
    with atomic_path(target) as tmp, tmp.open("wb") as dst, source.open("rb") as src:
        for start, end in ranges:
            src.seek(start)
            dst.write(src.read(end - start))


def load_existing(path: Path, *, drop_failed: bool = False) -> Existing:
    """Read OUT for resuming and repair it in place: remove a partial last line, unreadable lines, the lines of
    items whose windows are incomplete and (``drop_failed``) the lines of failed items."""
    existing = Existing()
    if not path.exists() or path.stat().st_size == 0:
        return existing
    lines, size = _scan_lines(path)
    status = {item_id: _item_status(group) for item_id, group in _group(lines).items()}
    drop = {i for i, s in status.items() if s == "incomplete" or (drop_failed and s == "failed")}
    keep = [line for line in lines if line.id is not None and line.id not in drop]
    existing.done = {i for i, s in status.items() if s == "done"}
    existing.failed = {i for i, s in status.items() if s == "failed"} - drop
    existing.dropped_lines = len(lines) - len(keep) + (size > (lines[-1].end if lines else 0))
    if keep == lines[: len(keep)]:  # only the tail goes: cut it off
        new_size = keep[-1].end if keep else 0
        if new_size != size:
            with path.open("r+b") as f:
                f.truncate(new_size)
    else:  # lines to remove in the middle (--retry-failed, a damaged line): rewrite
        _copy_ranges(path, path, [(line.start, line.end) for line in keep])
    if existing.dropped_lines:
        log.info("%s: removed %d partial, incomplete or retried line(s)", path, existing.dropped_lines)
    return existing


# ---------------------------------------------------------------------------------------------- scoring


@dataclass
class Summary:
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


def unique_items(items: Sequence[Item] | Sequence[str | Path]) -> list[Item]:
    """`items` as Items (input paths are found with `find_items`); ids must not repeat."""
    if items and not isinstance(items[0], Item):
        items = find_items(items)
    if len({item.id for item in items}) != len(items):
        raise ScoreError("item ids repeat; every item needs its own id")
    return list(items)


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


def score_items(
    items: Sequence[Item] | Sequence[str | Path],
    model: str | Path | ModelRuntime,
    output: str | Path,
    *,
    workers: int = 2,
    pool: str = "thread",
    retry_failed: bool = False,
    progress: bool = False,
    on_item: Callable[[str], None] | None = None,
    **options,
) -> Summary:
    """Score `items` (Items, or input paths for `find_items`) with an ONNX model, appending to the JSONL file
    `output` and skipping ids already there. Returns the run's summary.

    `options` are those of `prepare` (stride, batch_size, png_dir, sounding_threshold, ...): the sounding
    threshold defaults to the model's calibrated value (else the service's fallback); boxes and normalisation
    follow `fnac.postprocess`. `on_item(id)` is called after each item's lines are written.
    """
    started = time.perf_counter()
    items = unique_items(items)
    setup = prepare(model, **options)
    runtime, batch_size = setup.runtime, options.get("batch_size", 16)

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    existing = load_existing(output, drop_failed=retry_failed)
    finished = existing.done | existing.failed
    todo = [item for item in items if item.id not in finished]
    summary = Summary(skipped=len(items) - len(todo), output=str(output))
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="score", unit="item", dynamic_ncols=True, file=sys.stderr)

    with output.open("a", encoding="utf-8") as out:

        def write(item: Item, lines: list[dict]) -> None:
            # All of an item's lines in one write, flushed: a kill leaves at most one partial line at the end.
            out.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
            out.flush()
            summary.count(lines, bar)
            if on_item is not None:
                on_item(item.id)

        def flush(batch: list[tuple[Item, pipeline.DecodedInput]]) -> None:
            for item, decoded, outcome in _infer(runtime, batch, batch_size):
                write(item, item_rows(item, decoded, outcome, setup))

        pending: list[tuple[Item, pipeline.DecodedInput]] = []
        n_windows = 0
        try:
            for item, decoded in _decode_in_order(todo, setup.job, workers, pool):
                if isinstance(decoded, Failure):
                    write(item, item_rows(item, decoded, None, setup))
                    continue
                pending.append((item, decoded))
                n_windows += len(decoded.times)
                if n_windows >= batch_size:
                    flush(pending)
                    pending, n_windows = [], 0
            flush(pending)
        finally:
            if bar is not None:
                bar.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _infer(
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


def _load_model(path: str | Path, providers: list[str] | None, threads: int) -> ModelRuntime:
    try:
        return ModelRuntime(path, providers=providers, intra_op_threads=threads)
    except ModelError as exc:
        raise ScoreError(str(exc)) from None


# ---------------------------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `fnac score`."""
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="video files, directories or CSV/TSV lists")
    p.add_argument("--model", help="exported ONNX model (default: the bundled model)")
    p.add_argument("-o", "--output", required=True, help="JSONL file to append to (resumed when it exists)")
    p.add_argument(
        "--stride",
        type=float,
        help="score windows every STRIDE seconds over each whole clip (default: one window)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="windows per model call (default 16)")
    p.add_argument("--workers", type=int, default=2, help="decoding workers; 0 decodes inline (default 2)")
    p.add_argument(
        "--pool",
        choices=["thread", "process"],
        default="thread",
        help="decode in threads (default) or in processes (a crashing decoder then fails only its item)",
    )
    p.add_argument("--png-dir", help="write one PNG per item (per window with --stride) into this directory")
    p.add_argument(
        "--video-out",
        metavar="DIR",
        help="write each clip's overlay video into DIR as <id>.mp4 (the heatmap, boxes and score over the clip, "
        "with its audio; implies --stride 0.5 unless given; frame + audio pairs get none)",
    )
    p.add_argument("--png", choices=["overlay", "heatmap"], help="which PNG (default overlay)")
    p.add_argument(
        "--heatmap-decimals", type=int, default=4, help="decimals of the raw heatmap in the JSONL (default 4)"
    )
    p.add_argument("--no-heatmap", action="store_true", help="leave the raw heatmap out of the JSONL")
    p.add_argument(
        "--sounding-threshold",
        type=float,
        help="raw score for 'sounding' (default: the model's calibrated value)",
    )
    p.add_argument(
        "--silence-dbfs",
        type=float,
        default=postprocess.SILENCE_DBFS,
        help="audio windows at or below this RMS level are never 'sounding' (default %(default)s dBFS)",
    )
    p.add_argument(
        "--box-threshold", type=float, default=contract.BOX_THRESHOLD, help="on the normalised heatmap"
    )
    p.add_argument(
        "--box-min-area",
        type=float,
        default=contract.BOX_MIN_AREA,
        help="smallest box, fraction of the frame",
    )
    p.add_argument(
        "--boxes",
        choices=pipeline.BOXES_MODES,
        default="sounding",
        help="sounding (default): no boxes for a window that is not sounding; always: boxes for every window",
    )
    p.add_argument(
        "--no-ogl",
        dest="ogl",
        action="store_const",
        const=False,
        default=None,
        help="on a model with object-guided localization: boxes and PNGs from the audio-visual map alone "
        "(default: the fused map, as the service)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=media.DEFAULT_MAX_SECONDS,
        help="longest clip or audio accepted, in seconds (default %(default)g)",
    )
    p.add_argument(
        "--max-windows", type=int, default=contract.MAX_WINDOWS, help="most windows per clip with --stride"
    )
    p.add_argument(
        "--shard", help="score shard i/n of the sorted id list (0-based), e.g. a job array's index"
    )
    p.add_argument("--retry-failed", action="store_true", help="score again the items OUT records as failed")
    p.add_argument("--providers", help="comma list of ONNX Runtime providers, e.g. cuda,cpu (default: auto)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    ray = p.add_argument_group("engine (Ray needs the scale extra: pip install 'fnac[scale]')")
    ray.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process and its decode workers (default); ray: Ray Data, on an embedded cluster "
        "or the one at --ray-address (docs/SCALING.md)",
    )
    ray.add_argument(
        "--ray-address", help="join this Ray cluster (default: RAY_ADDRESS, else an embedded one)"
    )
    ray.add_argument(
        "--actors", type=int, default=1, help="model actors, one ONNX Runtime session each (default 1)"
    )
    ray.add_argument(
        "--gpus-per-actor",
        type=float,
        default=0.0,
        help="GPUs per model actor; > 0 runs it on CUDA (default 0)",
    )
    ray.add_argument(
        "--cpus-per-actor",
        type=float,
        default=1.0,
        help="CPUs per model actor, also its ONNX Runtime thread count (default 1)",
    )
    ray.add_argument(
        "--format",
        dest="output_format",
        choices=["jsonl", "parquet"],
        default="jsonl",
        help="jsonl: one file (default); parquet: a folder of Parquet parts (--engine ray). A filesystem URI "
        "as OUT is a folder of parts too",
    )


def run(args: argparse.Namespace) -> int:
    """`fnac score` entry point: 0 when anything was scored (or everything already was), 1 when every
    attempted item failed, 2 on a user error."""
    try:
        return _run(args)
    except ScoreError as exc:
        print(f"fnac score: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    out = args.output
    if args.engine == "local" and (args.output_format != "jsonl" or "://" in out):
        raise ScoreError("--format parquet and filesystem URIs as OUT need --engine ray")
    if not args.model:
        args.model = str(contract.default_model_path())
    if not args.inputs:
        raise ScoreError("give at least one INPUT (video, directory or CSV/TSV list)")
    if args.png is not None and args.png_dir is None:
        raise ScoreError("--png needs --png-dir DIR")
    items = find_items(args.inputs)
    if not items:
        raise ScoreError(f"no videos or frame + audio pairs found in {' '.join(args.inputs)}")
    shard_label = ""
    index, count = 0, 1
    if args.shard:
        index, count = parse_shard(args.shard)
        shard_label = f"{index}/{count}"
    total = len(items)
    items = shard(items, index, count)
    if count > 1:
        log.info("shard %s: %d of %d items -> %s", shard_label, len(items), total, out)
    providers = contract.parse_providers(args.providers)
    options = dict(
        stride=args.stride,
        batch_size=args.batch_size,
        png_dir=args.png_dir,
        png=args.png or "overlay",
        video_dir=args.video_out,
        heatmap_decimals=None if args.no_heatmap else args.heatmap_decimals,
        sounding_threshold=args.sounding_threshold,
        silence_dbfs=args.silence_dbfs,
        box_threshold=args.box_threshold,
        box_min_area=args.box_min_area,
        boxes=args.boxes,
        ogl=args.ogl,
        max_seconds=args.max_seconds,
        max_windows=args.max_windows,
    )
    if args.engine == "ray":
        from training.score_ray import RayOptions, score_items_ray

        ray_options = RayOptions(args.ray_address, args.actors, args.gpus_per_actor, args.cpus_per_actor)
        summary = score_items_ray(
            items,
            args.model,
            out,
            ray_options=ray_options,
            output_format=args.output_format,
            retry_failed=args.retry_failed,
            providers=providers,
            progress=args.progress,
            **options,
        )
    else:
        summary = score_items(
            items,
            args.model,
            out,
            workers=args.workers,
            pool=args.pool,
            retry_failed=args.retry_failed,
            providers=providers,
            threads=args.threads,
            progress=args.progress,
            **options,
        )
    summary.shard = shard_label
    print(summary.line())
    if summary.items and summary.failures == summary.items:
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.score",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
