"""The `kill-train` part: `fnac train` SIGKILLed at random points (one process and under torchrun), resumed
each time and compared with an uninterrupted run of the same command."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.reliability.common import ROOT

TINY_TRAIN = ["--width", "8", "--dim", "32", "--image-size", "64", "--clip-seconds", "1", "--workers", "0"]
TINY_TRAIN += ["--batch-size", "8", "--warmup-epochs", "1", "--no-progress"]
# Per-epoch figures that must not depend on being killed and resumed (timings and throughput do).
DETERMINISTIC = (
    "train_loss",
    "train_contrastive",
    "val_ap50",
    "val_mean_ciou",
    "val_loss",
    "val_retrieval_top1",
)


def make_tiny_synth(root: Path) -> Path:
    from training.synth import make_synth

    make_synth(
        root,
        n_classes=4,
        n_train=32,
        n_val=8,
        n_test=8,
        image_size=64,
        clip_seconds=1.0,
        distractors=(0, 1),
        negatives=False,
    )
    return root


def train_command(data: Path, run: Path, epochs: int, nproc: int = 1, resume: bool = False) -> list[str]:
    args = ["--data", str(data), "-o", str(run), "--epochs", str(epochs), *TINY_TRAIN]
    args += ["--resume"] if resume else []
    if nproc == 1:
        return [sys.executable, "-m", "training.train", *args]
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    return [torchrun, "--standalone", "--nproc_per_node", str(nproc), "-m", "training.train", *args]


def train_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


@dataclass
class Kill:
    """One SIGKILL of a training run and what the run directory held right after it."""

    aim: str  # "random" (a random moment) or "checkpoint" (as soon as a checkpoint write is seen)
    at_s: float  # seconds after the launch
    logged_epoch: int  # the last "epoch N:" line the run had logged
    last_epoch: int  # epoch stored in last.pt (0: none yet)
    metrics_rows: int
    hit_write: bool  # a checkpoint temp file was being written at the kill
    checkpoints_ok: bool  # every .pt in the run loads as a checkpoint and a model

    def line(self) -> str:
        return (
            f"kill ({self.aim:>10}) at {self.at_s:5.2f} s: logged epoch {self.logged_epoch}, last.pt epoch "
            f"{self.last_epoch}, metrics rows {self.metrics_rows}, mid-write {'yes' if self.hit_write else 'no'}, "
            f"checkpoints {'all load' if self.checkpoints_ok else 'CORRUPT'}"
        )


def _temp_files(run: Path) -> set[str]:
    return {p.name for p in run.glob(".*.tmp")} if run.exists() else set()


def _check_checkpoints(run: Path) -> bool:
    from model.checkpoint import CheckpointError, load_model

    try:
        for path in run.glob("*.pt"):
            load_model(path)
    except (CheckpointError, RuntimeError, KeyError):
        return False
    return True


def kill_once(command: list[str], run: Path, aim: str, delay_s: float, log_path: Path, timeout: float = 300):
    """Start `command`, SIGKILL its whole process group at `delay_s` (aim "random") or as soon as a new
    checkpoint temp file appears after `delay_s` (aim "checkpoint"). Returns the Kill, or None when the run
    finished first."""
    from model.checkpoint import read_checkpoint

    before = _temp_files(run)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=train_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    started = time.monotonic()
    hit_write = False
    try:
        while process.poll() is None:
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                raise RuntimeError(
                    f"training did not finish in {timeout:g} s:\n{log_path.read_text()[-2000:]}"
                )
            if elapsed >= delay_s and (aim == "random" or _temp_files(run) - before):
                hit_write = aim == "checkpoint"
                os.killpg(process.pid, signal.SIGKILL)  # torchrun's workers too: a machine that lost power
                break
            time.sleep(0.001 if aim == "checkpoint" and elapsed >= delay_s else 0.01)
    finally:
        process.wait()
    at_s = time.monotonic() - started
    if process.returncode == 0:
        return None
    if process.returncode != -signal.SIGKILL:
        raise RuntimeError(f"training failed (exit {process.returncode}):\n{log_path.read_text()[-3000:]}")
    time.sleep(0.2)  # torchrun's workers are in the same group; let the kernel reap them
    logged = [
        int(line.split("epoch ", 1)[1].split(":", 1)[0])
        for line in log_path.read_text().splitlines()
        if "fnac.train: epoch " in line
    ]
    last = run / "last.pt"
    metrics = run / "metrics.jsonl"
    return Kill(
        aim=aim,
        at_s=at_s,
        logged_epoch=max(logged, default=0),
        last_epoch=read_checkpoint(last)["epoch"] if last.exists() else 0,
        metrics_rows=len(metrics.read_text().splitlines()) if metrics.exists() else 0,
        hit_write=hit_write and bool(_temp_files(run) - before),
        checkpoints_ok=_check_checkpoints(run),
    )


def kill_and_resume(
    data: Path,
    run: Path,
    *,
    epochs: int,
    kills: int,
    nproc: int,
    rng: random.Random,
    max_delay_s: float,
    log_dir: Path,
) -> list[Kill]:
    """Kill the run `kills` times at random points (every other kill aimed at a checkpoint write), resuming
    after each; then resume to the end. Returns the kills that happened (a run may finish before a kill)."""
    done: list[Kill] = []
    remaining = epochs
    for k in range(kills):
        aim = "checkpoint" if k % 2 else "random"
        command = train_command(data, run, epochs, nproc, resume=k > 0)
        # aim within what is left of the run: start-up (~3 s here) plus the remaining epochs' share
        upper = min(max_delay_s, 3.0 + max_delay_s * remaining / epochs)
        kill = kill_once(command, run, aim, rng.uniform(0.5, upper), log_dir / f"kill{k}.log")
        if kill is None:
            return done
        if kill.last_epoch >= epochs:  # killed while exiting after the last epoch: nothing to resume
            return done
        done.append(kill)
        remaining = epochs - kill.last_epoch
    final = subprocess.run(
        train_command(data, run, epochs, nproc, resume=True),
        cwd=ROOT,
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if final.returncode != 0:
        raise RuntimeError(f"the final resume failed:\n{final.stderr[-3000:]}")
    return done


def compare_runs(reference: Path, resumed: Path) -> dict:
    """Final weights and per-epoch deterministic metrics of two runs of the same command."""
    import torch

    from model.checkpoint import read_checkpoint

    a, b = read_checkpoint(reference / "last.pt"), read_checkpoint(resumed / "last.pt")
    max_diff = max(float((a["model"][k].double() - b["model"][k].double()).abs().max()) for k in a["model"])
    identical = all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    rows_a = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    metric_diff = max(
        (
            abs(ra[key] - rb[key])
            for ra, rb in zip(rows_a, rows_b, strict=True)
            for key in DETERMINISTIC
            if key in ra and key in rb
        ),
        default=0.0,
    )
    return {
        "epochs": [r["epoch"] for r in rows_b],
        "last_epoch": b["epoch"],
        "weights_identical": identical,
        "max_weight_diff": max_diff,
        "max_metric_diff": metric_diff,
        "final_reference": {k: rows_a[-1].get(k) for k in DETERMINISTIC if k in rows_a[-1]},
        "final_resumed": {k: rows_b[-1].get(k) for k in DETERMINISTIC if k in rows_b[-1]},
    }


def kill_violations(kills: list[Kill]) -> list[str]:
    """The durability claims, per kill: checkpoints load, nothing logged is lost, metrics follow last.pt."""
    problems = []
    for kill in kills:
        if not kill.checkpoints_ok:
            problems.append(f"corrupt checkpoint after {kill.line()}")
        if kill.last_epoch < kill.logged_epoch:  # an epoch reported done is gone: more than one epoch lost
            problems.append(f"logged epoch lost after {kill.line()}")
        if kill.metrics_rows not in (kill.last_epoch, kill.last_epoch - 1):
            problems.append(f"metrics.jsonl out of step with last.pt after {kill.line()}")
    return problems


def run_kill_train(args, work: Path) -> int:
    """Many random SIGKILLs of `fnac train`, single-process and under torchrun, each run resumed to the end and
    compared with an uninterrupted run of the same command."""
    data = make_tiny_synth(work / "synth")
    rng = random.Random(args.seed)
    print(f"seed {args.seed}; tiny network, 32 synthetic training samples, {args.epochs} epochs")
    problems, summary = [], []
    for nproc, kills in ((1, args.kills), (2, args.torchrun_kills)):
        if not kills:
            continue
        label = "1 process" if nproc == 1 else f"torchrun --nproc_per_node {nproc}"
        reference = work / f"reference-{nproc}"
        started = time.monotonic()
        subprocess.run(
            train_command(data, reference, args.epochs, nproc),
            cwd=ROOT,
            env=train_env(),
            check=True,
            capture_output=True,
            timeout=900,
        )
        run_s = time.monotonic() - started
        print(f"\n{label}: uninterrupted run {run_s:.1f} s; killing at random points up to {run_s:.1f} s")
        done: list[Kill] = []
        for attempt in range(3 * kills):  # a run can finish before its kill lands; start another then
            if len(done) >= kills:
                break
            run = work / f"killed-{nproc}-{attempt}"
            want = min(kills - len(done), args.kills_per_run)
            happened = kill_and_resume(
                data,
                run,
                epochs=args.epochs,
                kills=want,
                nproc=nproc,
                rng=rng,
                max_delay_s=run_s,
                log_dir=work,
            )
            for kill in happened:
                print("  " + kill.line())
            done += happened
            comparison = compare_runs(reference, run)
            print(
                f"  resumed run {run.name}: epochs {comparison['epochs'][0]}..{comparison['epochs'][-1]}, "
                f"weights identical to the uninterrupted run: {comparison['weights_identical']} (max |diff| "
                f"{comparison['max_weight_diff']:.2e}), max per-epoch metric diff {comparison['max_metric_diff']:.2e}"
            )
            if comparison["epochs"] != list(range(1, args.epochs + 1)):
                problems.append(f"{run.name}: epochs {comparison['epochs']}")
            if comparison["max_metric_diff"] > args.tolerance:
                problems.append(f"{run.name}: metrics differ by {comparison['max_metric_diff']:.2e}")
        problems += kill_violations(done)
        summary.append(
            f"{label}: {len(done)} kills ({sum(k.hit_write for k in done)} during a checkpoint write, "
            f"{sum(k.aim == 'random' for k in done)} at random moments), "
            f"corrupt checkpoints {sum(not k.checkpoints_ok for k in done)}"
        )
    print()
    for line in summary:
        print(line)
    for problem in problems:
        print(f"FAIL {problem}")
    return 0 if not problems else 1
