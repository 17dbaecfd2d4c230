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
item gives one line per window (every S seconds, see `fnac.windows.sweep_times`) with ``window`` and
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
import logging
import sys

from fnac import contract, media, pipeline, postprocess
from training.score_inputs import ScoreError, find_items, parse_shard, shard
from training.score_local import score_items

log = logging.getLogger("fnac.score")


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
