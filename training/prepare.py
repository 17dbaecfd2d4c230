"""`fnac prepare INPUT -o DIR`: raw videos → the dataset layout `fnac train` and `fnac eval` read.

For each video (a folder searched recursively for .mp4/.mkv/.webm/.mov/.avi, or a CSV ``path[,id]``):

- ``frames/<id>.jpg``: the middle frame (the EZ-VSL maintainers' choice of test frame), original resolution;
- ``audio/<id>.wav``: the ``--seconds`` of audio centred on that frame, mono, at ``--sample-rate``, 16-bit PCM.

The default segment is the model's clip length (3 s): the reference pipeline only ever uses the centred 3 s
window, in training too, so that is all it needs. Store more (e.g. ``--seconds 10``) to train with
``--audio-window random``; the loader always cuts the centred window by default, so both give the same
reference inputs. Clips shorter than the segment are stored whole (not tiled); the loader tiles them.

Decoding is :func:`fnac.media.decode_clip` (PyAV), the same code the service runs. Work runs in a process
pool (``--workers``); ids whose two outputs already exist are skipped, so an interrupted run is resumed by
running it again; every file is written to a temporary name and renamed. Failures are listed with their reason in
``DIR/failures.csv``; the exit status is non-zero only when every attempted video failed.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.atomic import atomic_write_bytes
from training.layout import DatasetError, scan_videos
from training.mediafiles import wav_bytes

log = logging.getLogger("fnac.prepare")


@dataclass(frozen=True)
class Job:
    id: str
    video: Path


@dataclass(frozen=True)
class Outcome:
    id: str
    video: str
    ok: bool
    reason: str = ""


def find_videos(input_path: str | Path) -> list[Job]:
    """Jobs from a folder (recursive; id = file stem, or the relative path joined with '__' when stems
    collide; other files than videos are skipped and named in a warning) or from a manifest CSV
    (``path[,id]``)."""
    input_path = Path(input_path)
    if input_path.is_file():
        from training.datasets import read_manifest

        return [Job(clip_id, video) for clip_id, video in read_manifest(input_path)]
    if not input_path.is_dir():
        raise DatasetError(f"input not found: {input_path}")
    videos, skipped = scan_videos(input_path)
    if skipped:
        shown = ", ".join(str(p.relative_to(input_path)) for p in skipped[:10])
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        log.warning(
            "%s: skipped %d file(s) that are not videos by their extension: %s%s",
            input_path,
            len(skipped),
            shown,
            more,
        )
    stems = Counter(p.stem for p in videos)
    jobs = []
    for p in videos:
        clip_id = p.stem if stems[p.stem] == 1 else "__".join(p.relative_to(input_path).with_suffix("").parts)
        jobs.append(Job(clip_id, p))
    return jobs


def output_paths(out: Path, clip_id: str) -> tuple[Path, Path]:
    return out / "frames" / f"{clip_id}.jpg", out / "audio" / f"{clip_id}.wav"


def is_done(out: Path, clip_id: str) -> bool:
    return all(p.is_file() for p in output_paths(out, clip_id))


def jpeg_bytes(frame: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def prepare_one(job: Job, out: Path, seconds: float, sample_rate: int, jpeg_quality: int = 95) -> Outcome:
    """Decode one video and write its frame and audio; never raises for a bad video."""
    from fnac.media import MediaError, clip_duration, decode_clip

    try:
        clip = decode_clip(job.video, clip_seconds=seconds, sample_rate=sample_rate, name=str(job.video))
        audio = clip.audio
        # decode_clip tiles clips shorter than the window; store only the real audio (the loader tiles).
        duration = clip_duration(job.video, name=str(job.video))
        audio = audio[: max(1, min(audio.size, round(duration * sample_rate)))]
        frame_path, audio_path = output_paths(out, job.id)
        # audio first: `is_done` needs both, and a frame without audio is obviously unfinished.
        atomic_write_bytes(audio_path, wav_bytes(audio, sample_rate))
        atomic_write_bytes(frame_path, jpeg_bytes(clip.frame, jpeg_quality))
    except MediaError as exc:
        return Outcome(job.id, str(job.video), False, f"{exc.code}: {exc.message}")
    except Exception as exc:  # a corrupt file can surface as anything from FFmpeg or Pillow
        return Outcome(job.id, str(job.video), False, f"{type(exc).__name__}: {exc}")
    return Outcome(job.id, str(job.video), True)


def _prepare_one_star(args) -> Outcome:
    return prepare_one(*args)


def prepare(
    input_path: str | Path,
    out: str | Path,
    *,
    seconds: float = 3.0,
    sample_rate: int = 16_000,
    workers: int | None = None,
    jpeg_quality: int = 95,
    progress: bool = True,
) -> dict:
    """Prepare every video of `input_path` into `out`; returns ``{"total", "skipped", "done", "failed",
    "failures": [(id, reason)]}`` and writes ``out/failures.csv`` (header only when nothing failed)."""
    out = Path(out)
    jobs = find_videos(input_path)
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        raise ValueError("video ids repeat; give an id column in the CSV")
    for sub in ("frames", "audio"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    todo = [j for j in jobs if not is_done(out, j.id)]
    skipped = len(jobs) - len(todo)
    outcomes: list[Outcome] = []
    workers = workers or min(8, os.cpu_count() or 1)
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="prepare", unit="video", dynamic_ncols=True)
    args = [(job, out, seconds, sample_rate, jpeg_quality) for job in todo]
    if workers <= 1 or len(todo) <= 1:
        for a in args:
            outcomes.append(_prepare_one_star(a))
            if bar:
                bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_prepare_one_star, a) for a in args]
            for future in as_completed(futures):
                outcomes.append(future.result())
                if bar:
                    bar.update(1)
    if bar:
        bar.close()
    failures = sorted((o for o in outcomes if not o.ok), key=lambda o: o.id)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "path", "reason"])
    for o in failures:
        writer.writerow([o.id, o.video, o.reason])
    atomic_write_bytes(out / "failures.csv", buffer.getvalue().encode())
    for o in failures:
        log.warning("failed: %s (%s): %s", o.id, o.video, o.reason)
    return {
        "total": len(jobs),
        "skipped": skipped,
        "done": sum(o.ok for o in outcomes),
        "failed": len(failures),
        "failures": [(o.id, o.reason) for o in failures],
    }


# ---------------------------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `fnac prepare`."""
    p.add_argument("input", help="folder of videos (searched recursively) or CSV of path[,id]")
    p.add_argument("-o", "--output", required=True, help="dataset directory to write (frames/, audio/)")
    p.add_argument(
        "--seconds",
        type=float,
        default=3.0,
        help="audio stored per clip, centred on the middle frame (default 3 = the model's window)",
    )
    p.add_argument("--sample-rate", type=int, default=16_000, help="stored audio rate in Hz (default 16000)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: min(8, CPU count))")
    p.add_argument("--jpeg-quality", type=int, default=95, help="default %(default)s")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """`fnac prepare` entry point: 0 unless every attempted video failed (or there was nothing to read)."""
    result = prepare(
        args.input,
        args.output,
        seconds=args.seconds,
        sample_rate=args.sample_rate,
        workers=args.workers or None,
        jpeg_quality=args.jpeg_quality,
        progress=args.progress,
    )
    print(
        f"{result['total']} videos: {result['done']} prepared, {result['skipped']} already done, "
        f"{result['failed']} failed"
        + (f" (see {Path(args.output) / 'failures.csv'})" if result["failed"] else "")
    )
    if result["total"] == 0:
        print(f"fnac prepare: error: no videos found in {args.input}", file=sys.stderr)
        return 2
    attempted = result["done"] + result["failed"]
    return 1 if attempted and result["done"] == 0 else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.prepare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
