"""Offline scoring throughput: `fnac score --engine ray` (an embedded Ray cluster) vs the local engine.

Both score the same corpus of synthetic H.264 + AAC clips (`fnac synth`: scenes of SIZE px, CLIP seconds of
sound) with the same model, stride and batch size, into fresh outputs; the engines alternate in rounds, so
background load hits both alike. Reported per engine (median round): items/s over the whole command (model
load, and for Ray the cluster start, included), items/s without the Ray cluster's start (a one-off that a job
on a running cluster does not pay), and for Ray where its workers' time went (decode tasks vs the model actors, summed over workers). The rows of the two
engines are compared as well (ids, scores, boxes; ONNX Runtime's results move in the last digits with its
thread count, which differs: the local engine uses all cores, a Ray actor its own CPUs).

Ray binds to the machine's network address; as root with `unshare`, the Ray runs happen in a private network
namespace with only loopback up (as in the tests).

    python -m benchmarks.bench_score [--clips 48] [--size 320] [--clip-seconds 8] [--stride 1] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from service.config import DEFAULT_MODEL

SUMMARY = re.compile(
    r"scored (?P<ok>\d+) items \((?P<windows>\d+) windows\), (?P<failed>\d+) failed.* in (?P<seconds>[\d.]+) s"
)
RAY_SPLIT = re.compile(
    r"cluster start (?P<cluster>[\d.]+) s; workers: decode (?P<decode>[\d.]+) s, model (?P<model>[\d.]+) s, "
    r"rows (?P<rows>[\d.]+) s"
)


def make_corpus(folder: Path, clips: int, size: int, clip_seconds: float) -> Path:
    from training.synth import make_synth

    make_synth(
        folder,
        n_train=0,
        n_val=0,
        n_test=clips,
        image_size=size,
        clip_seconds=clip_seconds,
        mp4_clips=clips,
        negatives=False,
        workers=2,
    )
    return folder / "clips"


def run_engine(engine: str, corpus: Path, model: Path, out: Path, args: list[str]) -> dict:
    command = [str(Path(sys.executable).parent / "fnac"), "score", str(corpus), "--model", str(model)]
    command += ["-o", str(out), "--engine", engine, "--no-progress", *args]
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    if engine == "ray" and os.geteuid() == 0 and shutil.which("unshare"):
        quoted = " ".join(f"'{part}'" for part in command)
        command = ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {quoted}"]
    started = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{engine} engine failed ({process.returncode}):\n{process.stderr[-3000:]}")
    line = process.stdout.strip().splitlines()[-1]
    summary = SUMMARY.search(line)
    items = int(summary["ok"]) + int(summary["failed"])
    record = {"engine": engine, "items": items, "wall_s": wall, "line": line, "cluster": 0.0}
    split = RAY_SPLIT.search(line)
    if split:
        record |= {key: float(value) for key, value in split.groupdict().items()}
    record["items_per_s_wall"] = items / wall
    # Without the one-off cluster start, which a job on a running cluster does not pay.
    record["items_per_s_running"] = items / (wall - record["cluster"])
    return record


def agreement(a: Path, b: Path) -> str:
    """How far two engines' rows are apart: ids, scores, boxes."""

    def rows(path: Path) -> dict:
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        return {(r["id"], r.get("window")): r for r in lines}

    left, right = rows(a), rows(b)
    if left.keys() != right.keys():
        return f"different ids/windows ({len(left.keys() ^ right.keys())} not in both)"
    scored = [k for k in left if left[k]["score"] is not None]
    score_diff = max((abs(left[k]["score"] - right[k]["score"]) for k in scored), default=0.0)
    same_boxes = sum(
        [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in left[k]["boxes"]]
        == [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in right[k]["boxes"]]
        for k in scored
    )
    return (
        f"same {len(left)} ids/windows; max |score difference| {score_diff:.1e}; "
        f"box corners identical in {same_boxes}/{len(scored)} windows"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--size", type=int, default=320, help="frame size of the synthetic scenes (px)")
    parser.add_argument("--clip-seconds", type=float, default=8.0)
    parser.add_argument("--stride", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fnac-bench-score-") as tmp:
        work = Path(tmp)
        corpus = make_corpus(work / "synth", args.clips, args.size, args.clip_seconds)
        options = ["--stride", str(args.stride), "--batch-size", str(args.batch_size)]
        runs: dict[str, list[dict]] = {"local": [], "ray": []}
        for round_ in range(args.rounds):
            for engine in ("local", "ray") if round_ % 2 == 0 else ("ray", "local"):
                out = work / f"{engine}-{round_}.jsonl"
                runs[engine].append(run_engine(engine, corpus, args.model, out, options))
                print(f"round {round_} {engine:5s}: {runs[engine][-1]['line']}", flush=True)
        agree = agreement(work / "local-0.jsonl", work / "ray-0.jsonl")

    def med(engine: str, key: str) -> float:
        return median(run[key] for run in runs[engine])

    print(f"\ncorpus: {args.clips} clips, {args.size} px, {args.clip_seconds:g} s, stride {args.stride:g}")
    print(
        f"{'engine':8s} {'items/s (command)':>18s} {'(no cluster start)':>18s}  median of {args.rounds} rounds"
    )
    for engine in ("local", "ray"):
        print(
            f"{engine:8s} {med(engine, 'items_per_s_wall'):18.2f} {med(engine, 'items_per_s_running'):18.2f}"
        )
    wall_ratio = med("ray", "items_per_s_wall") / med("local", "items_per_s_wall")
    run_ratio = med("ray", "items_per_s_running") / med("local", "items_per_s_running")
    print(f"ray/local {wall_ratio:18.2f} {run_ratio:18.2f}")
    decode, model, rows = med("ray", "decode"), med("ray", "model"), med("ray", "rows")
    total = decode + model + rows
    print(
        f"ray workers: decode {decode:.1f} s ({decode / total:.0%}), model {model:.1f} s ({model / total:.0%}), "
        f"rows {rows:.1f} s ({rows / total:.0%}); cluster start {med('ray', 'cluster'):.1f} s"
    )
    print(f"local vs ray rows: {agree}")
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"model": str(args.model)}, "runs": runs}, default=str)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
