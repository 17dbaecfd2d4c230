"""The items `fnac score` works through: finding them in its INPUTS (video files, directories, CSV/TSV lists),
the `--shard` split, and decoding one item (`decode_item`, called by both engines)."""

from __future__ import annotations

import csv
import multiprocessing
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from fnac import media, pipeline
from fnac.errors import FnacError
from training.layout import VIDEO_SUFFIXES, frames_and_audio
from training.prepare import find_videos

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


def unique_items(items: Sequence[Item] | Sequence[str | Path]) -> list[Item]:
    """`items` as Items (input paths are found with `find_items`); ids must not repeat."""
    if items and not isinstance(items[0], Item):
        items = find_items(items)
    if len({item.id for item in items}) != len(items):
        raise ScoreError("item ids repeat; every item needs its own id")
    return list(items)


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


def decoder_crashed(item: Item) -> Failure:
    """The failure of an item whose decoder killed its process (both engines word it the same way)."""
    return Failure("decoder_crashed", f"the decoder process died while decoding '{item.id}'")


_decoder: ProcessPoolExecutor | None = None  # this process's decoder child, started on first use


def decode_isolated(
    item: Item,
    job: DecodeJob,
    decode: Callable[[Item, DecodeJob], pipeline.DecodedInput | Failure] = decode_item,
) -> pipeline.DecodedInput | Failure:
    """`decode(item, job)` in a child process kept for the next call: an input that crashes FFmpeg (or anything
    else that kills its process) gives `decoder_crashed` for that item, and the next call starts a new child.
    The Ray engine decodes this way, so that such a file is a failure row instead of a task Ray retries until
    the run stops. `decode` must pickle (a module-level function)."""
    global _decoder
    if _decoder is None:
        _decoder = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        return _decoder.submit(decode, item, job).result()
    except BrokenProcessPool:
        _decoder.shutdown(wait=False, cancel_futures=True)
        _decoder = None
        return decoder_crashed(item)
