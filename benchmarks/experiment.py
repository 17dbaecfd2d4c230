"""What the training experiments (`benchmarks.science`, `benchmarks.fn_control`) share: the work directory's
logging, the synthetic datasets with their decode cache, `fnac train` runs as subprocesses with a log each,
and the per-epoch metrics those runs write."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path


def argument_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An experiment's command line, its module docstring as the help."""
    return argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_model_arguments(
    parser: argparse.ArgumentParser, *, batch_size: int, width: int, dim: int, image_size: int
) -> None:
    """The training options every run of the experiment shares (`fnac train`'s flags of the same names)."""
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=width)
    parser.add_argument("--dim", type=int, default=dim)
    parser.add_argument("--image-size", type=int, default=image_size)


def add_run_arguments(parser: argparse.ArgumentParser, *, parallel: int, parallel_help: str) -> None:
    """The options of where and how many runs train at once, and of the probes."""
    parser.add_argument("--device", choices=["cpu", "cuda"])
    parser.add_argument("--parallel", type=int, default=parallel, help=parallel_help)
    parser.add_argument("--synth-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--probe-batches", type=int, default=8)


def begin(args: argparse.Namespace) -> str:
    """Log with timestamps and create the work directory (`args.out`); returns the device the probes use."""
    from training.distributed import resolve_device

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    return resolve_device(args.device)


def synth(out: Path, classes: int, args) -> Path:
    data = out / f"data_k{classes}"
    if (data / "priors.json").is_file():
        return data
    command = [
        sys.executable, "-m", "fnac", "synth", "-o", str(data), "--preset", "headroom",
        "--classes", str(classes), "--train", str(args.train), "--val", str(args.val), "--test", str(args.test),
        "--image-size", str(args.data_image_size), "--workers", str(args.synth_workers), "--seed", "0",
        "--priors", "--no-negatives",
    ]  # fmt: skip
    if args.distractors:  # after --preset, so it overrides the preset's 2-4
        command += ["--distractors", *map(str, args.distractors)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return data


def dataset(args, classes: int, config, max_samples: int | None = None) -> tuple[Path, dict]:
    """The dataset of `classes` classes (`synth`) with its training split decoded into the shared cache
    (`fnac train --cache-dir`), and its priors. `max_samples`: only the first N training scenes, as
    `fnac train --max-samples` cuts them, so the runs find this cache."""
    from training.cache import load_or_build
    from training.datasets import open_dataset

    data = synth(args.out, classes, args)
    train_set = open_dataset(data, config, "train", train=True)
    if max_samples:
        train_set.samples = train_set.samples[:max_samples]
    load_or_build(train_set, args.out / "cache", workers=args.synth_workers, progress=False)
    return data, json.loads((data / "priors.json").read_text())


def run_logged(
    command: list[str], log_path: Path, *, threads: int | None = None, timeout: float | None = None
) -> tuple[int | str, float]:
    """Run one command with its output appended to `log_path`: (exit code, or "time limit" past `timeout`
    seconds; wall seconds). `threads`: OMP_NUM_THREADS for it, for runs side by side that share the cores."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    with open(log_path, "a") as logfile:
        try:
            code: int | str = subprocess.run(
                command, stdout=logfile, stderr=subprocess.STDOUT, timeout=timeout, env=env
            ).returncode
        except subprocess.TimeoutExpired:
            code = "time limit"
    return code, time.perf_counter() - start


def history(run_dir: Path) -> list[dict]:
    """The rows a `fnac train` run wrote to its metrics.jsonl, one per epoch."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def write_report(out: Path, stem: str, report: dict, table: str) -> None:
    """OUT/<stem>.json (every number) and OUT/<stem>.md (the tables)."""
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{stem}.md").write_text(table)
