"""False negatives on purpose: FNAC vs contrastive-only at set in-batch false-negative rates, one command.

The paper's claim is that same-class pairs used as negatives (false negatives) hurt contrastive localization
and that FNAC's terms recover the loss. The synthetic benchmark knows every scene's class, so the rate can be
set exactly (`fnac train --fn-rate R`, training/sampler.py). Protocol:

1. one `fnac synth --preset headroom` dataset with `--classes` K classes (its priors measured);
2. one contrastive warm-up on it with the ordinary shuffle (`fnac train --baseline`, `--warmup-epochs` epochs,
   seed 0), or the checkpoint given with `--warmup`: the model every arm starts from;
3. for each rate R and seed S, two arms continue from that checkpoint's best epoch with a fresh optimizer
   (`--init-from`), the batches drawn at rate R with seed S, for `--epochs` epochs: FNAC (the FNAC terms on
   from the first step, weights matched to the batch: 100·batch/256) and contrastive-only (`--baseline`);
4. each run's epoch is selected on the validation split and scored on the TEST split (AP50, mean cIoU, AUC,
   official protocol); its encoders are probed on training batches drawn at the run's rate: how well the
   audio adjacency a·aᵀ (FNS-1's target) and the image adjacency ḡ·ḡᵀ (FNS-2's) find the false negatives.
   For a row with k ≥ 1 same-class partners, the k highest off-diagonal entries are taken as its
   identified false negatives, so precision = recall at that cut-off (R-precision); next to it the
   precision of the single highest entry.

Means over seeds with standard errors (std / √n); the paired difference FNAC − contrastive by seed.
Writes into the output folder OUT, not into the repository: a JSON report with every number and the same
tables in Markdown beside it (`experiment.write_report`, stem "fn_control"), and runs/<name>/ with a log each.
Resumable: finished runs are kept.

    python -m benchmarks.fn_control -o OUT [--rates 0.1 0.3 0.5] [--seeds 0 1 2] [--classes 10]
        [--train 3000] [--image-size 64 --width 8 --dim 64 --batch-size 32] [--warmup-epochs 12 --epochs 4]
        [--parallel 2] [--warmup CKPT]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import experiment

log = logging.getLogger("fnac.fn_control")

ARMS = ("fnac", "contrastive")


def run_name(rate: float, arm: str, seed: int) -> str:
    return f"r{rate:g}_{arm}_s{seed}"


def train_command(data: Path, run_dir: Path, args, *extra: str) -> list[str]:
    """The `fnac train` command line shared by the warm-up and every arm."""
    command = [
        sys.executable, "-m", "fnac", "train", "--data", str(data), "-o", str(run_dir),
        "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--width", str(args.width),
        "--dim", str(args.dim), "--image-size", str(args.image_size), "--clip-seconds", str(args.clip_seconds),
        "--dropout-img", "0",
        "--cache-dir", str(args.out / "cache"), "--workers", "1", "--no-progress", "--val-batch-size", "250",
        "--name", run_dir.name,
    ]  # fmt: skip
    if args.max_samples:
        command += ["--max-samples", str(args.max_samples)]
    if args.device:
        command += ["--device", args.device]
    return command + list(extra)


def arm_flags(arm: str, rate: float, seed: int, warmup: Path, args) -> list[str]:
    from model.losses import matched_weight

    flags = ["--init-from", str(warmup), "--fn-rate", f"{rate:g}", "--epochs", str(args.epochs)]
    flags += ["--seed", str(seed)]
    if arm == "contrastive":
        return [*flags, "--baseline"]
    weight = f"{matched_weight(args.batch_size):g}"
    return [*flags, "--warmup-epochs", "0", "--fns1", weight, "--fns2", weight, "--tne", weight]


def run_training(name: str, command: list[str], args, alone: bool = False) -> float:
    """Run one `fnac train` (resumed when it was interrupted); returns its wall seconds, or NaN on failure.
    `alone`: no other run beside it, so it takes every core."""
    run_dir = args.out / "runs" / name
    summary = run_dir / "summary.json"
    if not summary.is_file():
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        if (run_dir / "last.pt").is_file():
            command = [*command, "--resume"]
        threads = None
        if (args.device or "cpu") == "cpu":  # runs side by side share the cores
            threads = max(1, (os.cpu_count() or 1) // (1 if alone else args.parallel))
        code, wall = experiment.run_logged(command, args.out / "runs" / f"{name}.log", threads=threads)
        log.info("%s: exit %d after %.0f s", name, code, wall)
    if not summary.is_file():
        return float("nan")
    return float(json.loads(summary.read_text())["wall_seconds"])


def probe_batches(data: Path, rate: float, args) -> list[list[int]]:
    """Training-split batches drawn at `rate` (fixed seed: the same for every run at that rate)."""
    from training.datasets import find_samples
    from training.sampler import ClassBatchSampler, class_labels, classes_for_rate

    samples, _ = find_samples(data, "train")
    samples = samples[: args.max_samples or None]  # the scenes the runs train on
    labels, names = class_labels(data, [s.id for s in samples])
    per_batch, share = classes_for_rate(rate, args.batch_size, len(names))
    sampler = ClassBatchSampler(labels, args.batch_size, per_batch, seed=12345, more_classes_share=share)
    return [list(map(int, b)) for b in sampler.global_batches()[: args.probe_batches]]


def score(checkpoint: Path, data: Path, batches: list[list[int]], args, device: str) -> dict:
    """Test-split protocol numbers and the false-negative probe of one checkpoint."""
    from benchmarks.science import adjacency_probe
    from training.evaluate import evaluate

    report, _, _ = evaluate(checkpoint, data, negatives=False, progress=False)
    probe = adjacency_probe(checkpoint, data, args.batch_size, len(batches), device, batches=batches)
    return {
        "ap50": report["ap50"],
        "mean_ciou": report["mean_ciou"],
        "auc": report["auc"],
        "n": report["n"],
        "probe": probe,
    }


def mean_se(values: list[float]) -> dict:
    """Mean and standard error of the mean (std with ddof 1, over √n)."""
    array = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if array.size == 0:
        return {"mean": float("nan"), "se": float("nan"), "n": 0}
    se = float(array.std(ddof=1) / np.sqrt(array.size)) if array.size > 1 else float("nan")
    return {"mean": float(array.mean()), "se": se, "n": int(array.size)}


PROBE_KEYS = (
    "false_negative_rate",
    "audio_r_precision",
    "audio_precision_at_1",
    "image_r_precision",
    "image_precision_at_1",
)


def summarize(args, runs: list[dict], start: dict, priors: dict) -> dict:
    groups, paired = {}, {}
    for rate in args.rates:
        for arm in ARMS:
            rows = [r for r in runs if r["rate"] == rate and r["arm"] == arm]
            if rows:
                groups[f"r{rate:g}_{arm}"] = {
                    "rate": rate,
                    "arm": arm,
                    "runs": len(rows),
                    **{
                        k: mean_se([r[k] for r in rows])
                        for k in ("ap50", "mean_ciou", "auc", "train_fn_rate")
                    },
                    **{k: mean_se([r["probe"][k] for r in rows]) for k in PROBE_KEYS},
                    "best_epoch": mean_se([r["best_epoch"] for r in rows]),
                    "wall_seconds": mean_se([r["wall_seconds"] for r in rows]),
                }
        by_seed = {
            (r["arm"], r["seed"]): r for r in runs if r["rate"] == rate
        }  # the seeds with both arms finished
        seeds = [s for s in args.seeds if ("fnac", s) in by_seed and ("contrastive", s) in by_seed]
        if seeds:
            paired[f"r{rate:g}"] = {
                "rate": rate,
                "seeds": seeds,
                **{
                    k: {
                        "by_seed": [by_seed[("fnac", s)][k] - by_seed[("contrastive", s)][k] for s in seeds],
                        **mean_se([by_seed[("fnac", s)][k] - by_seed[("contrastive", s)][k] for s in seeds]),
                    }
                    for k in ("ap50", "mean_ciou", "auc")
                },
            }
    return {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "priors": priors,
        "start": start,
        "groups": groups,
        "paired": paired,
        "runs": runs,
    }


def markdown(report: dict) -> str:
    """The tables of `report` in Markdown."""

    def pm(cell, digits=3):
        if cell["n"] == 0:
            return "—"
        se = "" if not np.isfinite(cell["se"]) else f" ± {cell['se']:.{digits}f}"
        return f"{cell['mean']:.{digits}f}{se}"

    s = report["settings"]
    start = report["start"]
    lines = [
        f"Synthetic `fnac synth --preset headroom`, {s['classes']} classes, "
        f"{s.get('max_samples') or s['train']} training scenes, {s['test']} test scenes; network width "
        f"{s['width']}, dim {s['dim']}, {s['image_size']} px, {s.get('clip_seconds', 3.0):g} s of audio; batch "
        f"{s['batch_size']}, Adam lr {s['lr']}. Both arms continue for {s['epochs']} epoch(s) from the same "
        f"contrastive checkpoint ({start['checkpoint']}: test AP50 {start['ap50']:.3f}), with batches drawn at "
        "the given false-negative rate; epoch selected on validation; test split, official protocol. "
        f"Mean ± standard error over seeds {s['seeds']}.",
        "",
        "| FN rate asked | measured in training | arm | AP50 | mean cIoU | AUC | best epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in report["groups"].values():
        lines.append(
            f"| {g['rate']:g} | {pm(g['train_fn_rate'])} | {g['arm']} | {pm(g['ap50'])} | {pm(g['mean_ciou'])} | "
            f"{pm(g['auc'])} | {pm(g['best_epoch'], 1)} |"
        )
    lines += [
        "",
        "Paired by seed, FNAC − contrastive (test):",
        "",
        "| FN rate | seeds | AP50 by seed | AP50 mean ± se | mean cIoU mean ± se | AUC mean ± se |",
        "|---|---|---|---|---|---|",
    ]
    for p in report["paired"].values():
        by_seed = ", ".join(f"{d:+.3f}" for d in p["ap50"]["by_seed"])
        lines.append(
            f"| {p['rate']:g} | {p['seeds']} | {by_seed} | {pm(p['ap50'])} | {pm(p['mean_ciou'])} | {pm(p['auc'])} |"
        )
    lines += [
        "",
        "False-negative identification on training batches drawn at the rate (R-precision: a row's k highest "
        "off-diagonal entries, k its number of same-class partners, so precision = recall; P@1: its highest "
        "entry). FNS-1's target is the audio adjacency, FNS-2's the image adjacency. A random ranking scores "
        "about the probe's false-negative rate on both.",
        "",
        "| FN rate | model | probe FN rate | FNS-1 (audio) R-prec. | FNS-1 P@1 | FNS-2 (image) R-prec. | FNS-2 P@1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for rate_key, probe in start["probes"].items():
        lines.append(
            f"| {rate_key[1:]} | start | {probe['false_negative_rate']:.3f} | {probe['audio_r_precision']:.3f} | "
            f"{probe['audio_precision_at_1']:.3f} | {probe['image_r_precision']:.3f} | "
            f"{probe['image_precision_at_1']:.3f} |"
        )
    for g in report["groups"].values():
        lines.append(
            f"| {g['rate']:g} | {g['arm']} | {pm(g['false_negative_rate'])} | {pm(g['audio_r_precision'])} | "
            f"{pm(g['audio_precision_at_1'])} | {pm(g['image_r_precision'])} | {pm(g['image_precision_at_1'])} |"
        )
    lines += ["", "| prior / start | AP50 | mean cIoU | AUC |", "|---|---|---|---|"]
    lines.append(
        f"| start (warm-up checkpoint) | {start['ap50']:.3f} | {start['mean_ciou']:.3f} | {start['auc']:.3f} |"
    )
    for name, value in report["priors"].items():
        if isinstance(value, dict) and "ap50" in value:
            lines.append(f"| {name} | {value['ap50']:.3f} | {value['mean_ciou']:.3f} | {value['auc']:.3f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = experiment.argument_parser("python -m benchmarks.fn_control", __doc__)
    p.add_argument("-o", "--out", type=Path, required=True, help="work directory (resumable)")
    p.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.3, 0.5], help="in-batch FN rates")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--classes", type=int, default=10, help="classes K of the dataset")
    p.add_argument("--train", type=int, default=3000, help="training scenes")
    p.add_argument("--max-samples", type=int, help="train on only the first N of them (a smaller run)")
    p.add_argument("--val", type=int, default=500)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--distractors", type=int, nargs=2, metavar=("MIN", "MAX"), help="silent distractors")
    p.add_argument("--data-image-size", type=int, default=128, help="frame size the dataset is drawn at")
    p.add_argument(
        "--warmup", type=Path, help="continue from this contrastive checkpoint (default: train one)"
    )
    p.add_argument("--warmup-epochs", type=int, default=12, help="epochs of the contrastive warm-up")
    p.add_argument("--epochs", type=int, default=4, help="epochs of each arm after the warm-up")
    experiment.add_model_arguments(p, batch_size=32, width=8, dim=64, image_size=64)
    p.add_argument(
        "--clip-seconds",
        type=float,
        default=3.0,
        help="audio window (the audio encoder's cost scales with it)",
    )
    experiment.add_run_arguments(p, parallel=2, parallel_help="training runs at once")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = experiment.begin(args)

    from benchmarks.science import adjacency_probe
    from model.config import FNACConfig

    config = FNACConfig(
        width=args.width, dim=args.dim, image_size=args.image_size, clip_seconds=args.clip_seconds
    )
    data, priors = experiment.dataset(args, args.classes, config, max_samples=args.max_samples)

    warmup = args.warmup
    if warmup is None:
        name = "warmup"
        command = train_command(
            data,
            args.out / "runs" / name,
            args,
            "--baseline",
            "--epochs",
            str(args.warmup_epochs),
            "--seed",
            "0",
        )
        if not np.isfinite(run_training(name, command, args, alone=True)):
            raise SystemExit(f"the warm-up did not finish; see {args.out / 'runs' / (name + '.log')}")
        warmup = args.out / "runs" / name / "best.pt"
    batches = {rate: probe_batches(data, rate, args) for rate in args.rates}
    scoring = threading.Lock()  # one evaluation at a time; they would only fight over the cores
    reporting = threading.Lock()

    def score_start() -> dict:
        with scoring:
            start_scores = score(warmup, data, batches[args.rates[0]], args, device)
            return {
                "checkpoint": "warm-up" if args.warmup is None else str(args.warmup),
                **{k: start_scores[k] for k in ("ap50", "mean_ciou", "auc", "n")},
                "probes": {
                    f"r{rate:g}": adjacency_probe(
                        warmup, data, args.batch_size, len(chosen), device, batches=chosen
                    )
                    for rate, chosen in batches.items()
                },
            }

    # seed by seed, so that a sweep cut short still has whole seeds: every rate, both arms
    specs = [(rate, arm, seed) for seed in args.seeds for rate in args.rates for arm in ARMS]
    runs: list[dict] = []

    def train_and_score(spec) -> None:
        rate, arm, seed = spec
        name = run_name(rate, arm, seed)
        run_dir = args.out / "runs" / name
        command = train_command(data, run_dir, args, *arm_flags(arm, rate, seed, warmup, args))
        wall = run_training(name, command, args)
        if not np.isfinite(wall) or not (run_dir / "best.pt").is_file():
            log.warning("%s did not finish; left out", name)
            return
        history = experiment.history(run_dir)
        with scoring:
            scores = score(run_dir / "best.pt", data, batches[rate], args, device)
            runs.append(
                {
                    "name": name, "rate": rate, "arm": arm, "seed": seed, **scores,
                    "train_fn_rate": float(np.mean([row["fn_rate"] for row in history])),
                    "classes_per_batch": history[-1]["classes_per_batch"],
                    "more_classes_share": history[-1]["more_classes_share"],
                    "best_epoch": history[-1]["best_epoch"], "wall_seconds": wall,
                    "val_ap50_by_epoch": [row.get("val_ap50") for row in history],
                }
            )  # fmt: skip
            log.info("%s: test AP50 %.3f", name, scores["ap50"])
        begin = start.result()  # outside the scoring lock, which scoring the start itself needs
        with reporting:  # after every run, so a sweep cut short keeps what it has
            report = summarize(args, list(runs), begin, priors)
            experiment.write_report(args.out, "fn_control", report, markdown(report))

    # the starting checkpoint is scored while the first runs train
    with ThreadPoolExecutor(max_workers=max(1, args.parallel) + 1) as pool:
        start = pool.submit(score_start)
        with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as runners:
            list(runners.map(train_and_score, specs))
    start = start.result()
    report = summarize(args, runs, start, priors)
    experiment.write_report(args.out, "fn_control", report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
