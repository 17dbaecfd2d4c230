"""FNAC vs the contrastive-only baseline on the synthetic benchmark, at a high and a low false-negative rate.

For each class count K (few classes ⇒ many same-class pairs in a batch, i.e. in-batch false negatives), one
`fnac synth --preset headroom` dataset; on it, FNAC and the baseline (`fnac train --baseline`) with several
seeds, everything else equal. Every run is scored on the TEST split with the official protocol (AP50, AUC,
mean cIoU; the model was selected on the validation split), and its trained encoders are probed on training
batches of the same size as in training:

- the measured in-batch false-negative rate: the fraction of off-diagonal pairs (n ≠ m) of a batch whose
  sounding objects are of one class, the pairs the contrastive loss wrongly pushes apart;
- how well each adjacency finds them: for every row with k ≥ 1 same-class partners, the fraction of its k
  highest off-diagonal entries that are same-class (R-precision: precision = recall at that cut-off), and
  whether its single highest entry is (precision@1), for the audio adjacency a·aᵀ (FNS-1's target), the image
  adjacency ḡ·ḡᵀ (FNS-2's) and the audio-visual logits themselves.

and its localization maps are probed on the TEST scenes (a pointing game, less coarse than the protocol's
median threshold and blind to a map's overall shape):

- pointing: the fraction of scenes whose map, upsampled as in the protocol, peaks inside the sounding object's
  box; next to it the audio-free reference, the fraction whose image centre lies in that box;
- whether the peak follows the sound: each scene showing a silent distractor of another class is run again with
  the audio of another test scene where that class sounds; reported are the fraction of peaks that land in
  the distractor's box with the swapped audio, and (the audio-blind reference, what a map that ignores the
  audio scores) with the scene's own audio.

Writes into the output folder OUT, not into the repository: a JSON report with every number and the table in
Markdown beside it (`experiment.write_report`, stem "science"), runs/<name>/ and data_k<K>/.
Runs go in parallel (`--parallel`), sharing one decode cache per dataset (`fnac train --cache-dir`).

`--shared-warmup`: FNAC's warm-up epochs are contrastive only, the very computation of the baseline with the
same seed (same initial weights, batches, augmentations; the learning rate is constant). So with this flag each
(K, seed) trains the warm-up ONCE, as OUT/runs/k<K>_warmup_s<seed> (`--baseline --epochs W`), and every method
of that seed continues from a copy of its last.pt with `--resume` (optimizer state and RNG streams included)
up to `--epochs`. The methods then differ only in what they do after the same warm-up, which makes the
comparison paired and costs W epochs less per extra method. The wall time reported per run includes its
warm-up.

    python -m benchmarks.science -o OUT [--classes 5 30] [--seeds 0 1 2] [--train 16000] [--epochs 20]
        [--width 32 --dim 128 --image-size 128 --lr 1e-3 --dropout-img 0 --warmup-epochs 5] [--parallel 12]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import experiment

log = logging.getLogger("fnac.science")


# Stands for the FNAC weight matched to the run's batch (model.losses.matched_weight) in METHODS.
MATCHED = "<matched>"

# What each method adds to the shared `fnac train` command line.
METHODS = {
    "fnac": [],  # contrastive, then + 100·FNS-1 + 100·FNS-2 + 100·TNE after the warm-up
    "baseline": ["--baseline"],  # contrastive only (EZ-VSL)
    "fnac-nofns2": ["--fns2", "0"],  # ablation: no image-adjacency term
    "fnac-lambda1": ["--fns1", "1", "--fns2", "1", "--tne", "1"],  # the FNAC terms at 1/100 of the paper's
    # the paper's weights rescaled to this batch size, with and without FNS-2 (weak image-adjacency target)
    "fnac-scaled": ["--fns1", MATCHED, "--fns2", MATCHED, "--tne", MATCHED],
    "fnac-scaled-nofns2": ["--fns1", MATCHED, "--fns2", "0", "--tne", MATCHED],
}


def method_flags(method: str, args) -> list[str]:
    from model.losses import matched_weight

    weight = f"{matched_weight(args.batch_size):g}"
    return [weight if flag == MATCHED else flag for flag in METHODS[method]]


def run_names(args) -> list[tuple[str, int, str, int]]:
    return [
        (f"k{k}_{method}_s{seed}", k, method, seed)
        for k in args.classes
        for method in args.methods
        for seed in args.seeds
    ]


def train_command(data: Path, run_dir: Path, method: str, seed: int, args) -> list[str]:
    command = [
        sys.executable, "-m", "fnac", "train", "--data", str(data), "-o", str(run_dir),
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
        "--warmup-epochs", str(args.warmup_epochs), "--width", str(args.width), "--dim", str(args.dim),
        "--image-size", str(args.image_size), "--dropout-img", str(args.dropout_img), "--seed", str(seed),
        "--cache-dir", str(args.out / "cache"), "--workers", "2", "--no-progress",
        "--val-batch-size", "250", "--name", run_dir.name,
    ]  # fmt: skip
    if args.device:
        command += ["--device", args.device]
    return command + method_flags(method, args)


_warmup_locks: dict[str, threading.Lock] = {}
_warmup_locks_guard = threading.Lock()


def shared_warmup(spec, data: Path, args) -> Path:
    """The contrastive warm-up run of this (K, seed), trained once (under a lock: methods run in parallel)."""
    _, classes, _, seed = spec
    name = f"k{classes}_warmup_s{seed}"
    with _warmup_locks_guard:
        lock = _warmup_locks.setdefault(name, threading.Lock())
    with lock:
        outcome = train_one((name, classes, "baseline", seed), data, args, epochs=args.warmup_epochs)
    run_dir = args.out / "runs" / name
    if outcome.get("exit", 0) != 0 or not (run_dir / "summary.json").is_file():
        raise RuntimeError(f"warm-up run {name} did not finish ({outcome.get('exit')}); see its log")
    return run_dir


def branch_from(warmup_dir: Path, run_dir: Path) -> None:
    """Start `run_dir` as a copy of the finished warm-up run (checkpoints, metrics), to be --resume'd."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("best.pt", "metrics.jsonl", "curve.png", "last.pt"):  # last.pt last: it marks the copy done
        if (warmup_dir / name).is_file():
            shutil.copy2(warmup_dir / name, run_dir / f".{name}.part")
            os.replace(run_dir / f".{name}.part", run_dir / name)


def train_one(spec, data: Path, args, epochs: int | None = None) -> dict:
    name, _, method, seed = spec
    run_dir = args.out / "runs" / name
    summary_path = run_dir / "summary.json"
    stopped_path = run_dir / "time_limit.json"  # a run stopped at --time-limit is finished: never resumed
    if summary_path.is_file():
        return {"name": name, "wall_seconds": json.loads(summary_path.read_text())["wall_seconds"]}
    if stopped_path.is_file():
        return json.loads(stopped_path.read_text())
    if (
        epochs is None
        and args.shared_warmup
        and args.warmup_epochs > 0
        and not (run_dir / "last.pt").is_file()
    ):
        branch_from(shared_warmup(spec, data, args), run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    command = train_command(data, run_dir, method, seed, args)
    if epochs is not None:
        command[command.index("--epochs") + 1] = str(epochs)
    if (run_dir / "last.pt").is_file():
        command.append("--resume")
    threads = None
    if args.parallel > 1 and (args.device or "cpu") == "cpu":  # runs side by side share the cores
        threads = max(1, (os.cpu_count() or 1) // args.parallel)
    code, wall = experiment.run_logged(
        command, args.out / "runs" / f"{name}.log", threads=threads, timeout=args.time_limit
    )
    log.info("%s: finished (%s) in %.0f s", name, code, wall)
    if summary_path.is_file():  # counts the epochs of earlier attempts and of a shared warm-up too
        wall = json.loads(summary_path.read_text())["wall_seconds"]
    outcome = {"name": name, "wall_seconds": wall, "exit": code}
    if code == "time limit" and run_dir.is_dir():
        stopped_path.write_text(json.dumps(outcome) + "\n")
    return outcome


def _collapsed(last_epoch: dict) -> bool:
    """Did the run end with FNAC on and the contrastive loss at chance (see training.train_report.collapse_warning)?"""
    from training.train_report import collapse_warning, contrastive_chance

    # metrics rows written before `contrastive_chance` existed lack it; it follows from the batch
    chance = {"contrastive_chance": contrastive_chance(last_epoch["global_batch"])}
    return collapse_warning({**chance, **last_epoch}) is not None


def _split_classes(data: Path) -> dict[str, int]:
    annotations = json.loads((data / "annotations.json").read_text())
    return {entry["file"]: int(entry["class_index"]) for entry in annotations["samples"]}


def adjacency_probe(
    checkpoint: Path, data: Path, batch: int, n_batches: int, device: str, batches: list | None = None
) -> dict:
    """In-batch false-negative rate and how well the trained adjacencies find those pairs (see module doc).

    `batches`: the probe batches as lists of training-split indices (default: `n_batches` random ones)."""
    import torch

    from model.checkpoint import load_model
    from model.losses import LossWeights, audio_adjacency, fnac_loss, image_adjacency, pair_logits
    from training.datasets import open_dataset

    model, _ = load_model(checkpoint)
    model.to(device)
    dataset = open_dataset(data, model.config, "train", train=False, with_gt=False)
    class_of = _split_classes(data)
    rng = np.random.default_rng(0)  # the same batches for every run on this dataset
    order = rng.permutation(len(dataset))[: batch * n_batches]
    if batches is None:
        batches = [order[b * batch : (b + 1) * batch] for b in range(n_batches)]
    stats: dict[str, list[float]] = {}

    def add(key, value):
        stats.setdefault(key, []).append(float(value))

    with torch.inference_mode():
        for chosen in batches:
            items = [dataset[int(i)] for i in chosen]
            labels = torch.tensor([class_of[item["id"]] for item in items], device=device)
            image = torch.stack([item["image"] for item in items]).to(device)
            audio = torch.stack([item["audio"] for item in items]).to(device)
            v, a = model(image, audio)
            same = labels[:, None] == labels[None, :]
            off = ~torch.eye(len(items), dtype=torch.bool, device=device)
            positives = (same & off).sum(dim=1)
            add("false_negative_rate", (same & off).sum() / off.sum())
            # What the FNAC terms weigh on these encoders (weighted as in the recipe, all switched on): at the
            # end of a warm-up, the pull they exert the moment they come on.
            recipe = LossWeights(warmup_epochs=0)
            _, parts = fnac_loss(v, a, model.tau, epoch=0, weights=recipe)
            add("loss_contrastive", parts["contrastive"])
            for term in ("fns1", "fns2", "tne"):
                add(f"loss_{term}_weighted", getattr(recipe, term) * parts[term])
            add("rows_with_false_negative", (positives > 0).float().mean())
            tau = model.tau
            for name, matrix in (
                ("audio", audio_adjacency(a, tau)),
                ("image", image_adjacency(v, tau)),
                ("audio_visual", pair_logits(v, a, tau)),
            ):
                scores = matrix.masked_fill(~off, float("-inf"))
                ranked = scores.argsort(dim=1, descending=True)
                hits = same.gather(1, ranked)  # [B, B]: is the r-th highest partner same-class
                rows = positives > 0
                r_precision = [
                    hits[n, : int(positives[n])].float().mean() for n in range(len(items)) if rows[n]
                ]
                add(f"{name}_r_precision", torch.stack(r_precision).mean())
                add(f"{name}_precision_at_1", hits[rows, 0].float().mean())
    return {key: float(np.mean(values)) for key, values in stats.items()}


def peak_point(heatmap: np.ndarray) -> tuple[float, float]:
    """(x, y) in [0, 1] of the pixel centre where the map, upsampled as in the protocol (bicubic), is highest."""
    from training import metrics

    upsampled = metrics.upsample_heatmap(heatmap)
    y, x = np.unravel_index(int(np.argmax(upsampled)), upsampled.shape)
    return (x + 0.5) / upsampled.shape[1], (y + 0.5) / upsampled.shape[0]


def _inside(point: tuple[float, float], box) -> bool:
    x, y = point
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def pointing_probe(checkpoint: Path, data: Path, batch: int = 50) -> dict:
    """Where the test maps peak, with the scene's own audio and with a silent distractor's sound (module doc)."""
    from training.evaluate import find_media
    from training.layout import load_pair
    from training.predictor import Predictor

    predictor = Predictor(checkpoint)
    annotations = json.loads((data / "annotations.json").read_text())["samples"]
    scenes = sorted((s for s in annotations if s["split"] == "test"), key=lambda s: s["file"])
    media = find_media(data, [s["file"] for s in scenes])
    scenes = [s for s in scenes if s["file"] in media]
    pairs = [load_pair(*media[s["file"]], predictor.spec) for s in scenes]
    images = np.stack([image for image, _ in pairs])
    audio = np.stack([wave for _, wave in pairs])

    def peaks(image_index: list[int], audio_index: list[int]) -> list[tuple[float, float]]:
        points = []
        for first in range(0, len(image_index), batch):
            heatmaps, _ = predictor(
                images[image_index[first : first + batch]], audio[audio_index[first : first + batch]]
            )
            points += [peak_point(h) for h in heatmaps]
        return points

    everyone = list(range(len(scenes)))
    own = peaks(everyone, everyone)
    sounding_box = [s["bbox"][0] for s in scenes]
    # the swap: the first silent distractor of another class for which some other test scene sounds that class
    donors: dict[int, list[int]] = {}
    for index, scene in enumerate(scenes):
        donors.setdefault(int(scene["class_index"]), []).append(index)
    swaps = []  # (scene, donor of the audio, distractor box)
    for index, scene in enumerate(scenes):
        for obj in scene["objects"]:
            candidates = [d for d in donors.get(int(obj["class_index"]), []) if d != index]
            if obj["sounding"] or obj["class_index"] == scene["class_index"] or not candidates:
                continue
            swaps.append((index, candidates[index % len(candidates)], obj["bbox"]))
            break
    swapped = peaks([i for i, _, _ in swaps], [d for _, d, _ in swaps])
    return {
        "pointing": float(np.mean([_inside(p, b) for p, b in zip(own, sounding_box, strict=True)])),
        "pointing_centre_prior": float(np.mean([_inside((0.5, 0.5), b) for b in sounding_box])),
        "pointing_swapped": float(
            np.mean([_inside(p, box) for p, (_, _, box) in zip(swapped, swaps, strict=True)])
        )
        if swaps
        else float("nan"),
        "pointing_swapped_blind": float(np.mean([_inside(own[i], box) for i, _, box in swaps]))
        if swaps
        else float("nan"),
        "pointing_n": len(scenes),
        "pointing_swapped_n": len(swaps),
    }


def _mean_std(values: list[float]) -> dict:
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
        "n": int(array.size),
    }


def summarize(args, results: list[dict], priors: dict[int, dict]) -> dict:
    table = {}
    for classes in args.classes:
        for method in args.methods:
            rows = [r for r in results if r["classes"] == classes and r["method"] == method]
            if not rows:
                continue
            table[f"k{classes}_{method}"] = {
                "classes": classes,
                "method": method,
                **{
                    key: _mean_std([r[key] for r in rows])
                    for key in ("ap50", "auc", "mean_ciou", "wall_seconds", "best_epoch", "epochs_done")
                },
                **{key: _mean_std([r["probe"][key] for r in rows]) for key in rows[0]["probe"]},
                **{key: _mean_std([r["pointing"][key] for r in rows]) for key in rows[0].get("pointing", {})},
                "collapsed_runs": sum(bool(r.get("collapsed")) for r in rows),
                "runs": len(rows),
            }
    return {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "priors": priors,
        "groups": table,
        "runs": results,
    }


def markdown(report: dict) -> str:
    from model.losses import RECIPE_BATCH, matched_weight

    def pm(cell, scale=1.0, digits=3):
        return f"{cell['mean'] * scale:.{digits}f} ± {cell['std'] * scale:.{digits}f}"

    s = report["settings"]
    low, high = s.get("distractors") or (2, 4)  # the preset's range when not overridden
    distractors = f"{low}–{high}" + ("" if s.get("distractors") else " (the preset's)")
    warmup = (
        f"the {s['warmup_epochs']} warm-up epochs trained once per (K, seed) and shared by every method; "
        if s.get("shared_warmup")
        else ""
    )
    lines = [
        f"Synthetic benchmark `fnac synth --preset headroom` with {distractors} silent distractors per scene, "
        f"{s['train']} training scenes, test split of {s['test']}; "
        f"network width {s['width']}, dim {s['dim']}, {s['image_size']} px; batch {s['batch_size']}, "
        f"Adam lr {s['lr']}, {s['epochs']} epochs (FNAC: contrastive for {s['warmup_epochs']} then + 100·FNS-1 "
        f"+ 100·FNS-2 + 100·TNE; fnac-nofns2 without FNS-2; fnac-lambda1 with weights 1; fnac-scaled with weights 100·{s['batch_size']}/{RECIPE_BATCH} = {matched_weight(s['batch_size']):g}, the pull 100 has at batch {RECIPE_BATCH}; fnac-scaled-nofns2 the same without FNS-2), visual dropout {s['dropout_img']}; seeds {s['seeds']}; "
        f"{warmup}best epoch chosen on the validation split. Mean ± std over seeds; AP50 / AUC / mean cIoU on the "
        "test split, bicubic. collapsed: runs whose last epoch had the FNAC terms on and the contrastive loss at "
        "chance (2·ln batch, within 0.1 %).",
        "",
        "| classes | in-batch FN rate | method | AP50 | AUC | mean cIoU | R-prec. audio adj. | R-prec. image adj. | R-prec. AV logits | best epoch | collapsed | wall s / run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group in report["groups"].values():
        lines.append(
            f"| {group['classes']} | {pm(group['false_negative_rate'])} | {group['method']} | {pm(group['ap50'])} | "
            f"{pm(group['auc'])} | {pm(group['mean_ciou'])} | {pm(group['audio_r_precision'])} | "
            f"{pm(group['image_r_precision'])} | {pm(group['audio_visual_r_precision'])} | "
            f"{pm(group['best_epoch'], digits=1)} | "
            f"{group['collapsed_runs']}/{group['runs']} | {group['wall_seconds']['mean']:.0f} |"
        )
    lines += [
        "",
        "The loss terms on each group's selected encoders (probe batches, every term on, weighted as in the "
        "recipe): what FNAC's terms add the moment they come on, against the contrastive loss (chance: "
        "2·ln batch). Collapsed encoders have all three at 0.",
        "",
        "| classes | method | contrastive | 100·FNS-1 | 100·FNS-2 | 100·TNE |",
        "|---|---|---|---|---|---|",
    ]
    for group in report["groups"].values():
        if "loss_contrastive" not in group:  # reports from before the probe measured the terms
            continue
        lines.append(
            f"| {group['classes']} | {group['method']} | {pm(group['loss_contrastive'])} | "
            f"{pm(group['loss_fns1_weighted'])} | {pm(group['loss_fns2_weighted'])} | "
            f"{pm(group['loss_tne_weighted'])} |"
        )
    lines += [
        "",
        "Where the test maps peak (pointing game; the map upsampled bicubic as in the protocol). Own audio: the "
        "fraction of peaks inside the sounding object's box, and the audio-free reference of the image centre. "
        "Swapped: the scene's silent distractor of another class made to sound (another test scene's audio of "
        "that class); the fraction of peaks in the distractor's box, against the same fraction for the "
        "scene's own audio (what a map that ignores the audio scores).",
        "",
        "| classes | method | own audio: peak in sounding box | image centre in it | swapped: peak in distractor box | own audio: peak in distractor box | scenes / swapped |",
        "|---|---|---|---|---|---|---|",
    ]
    for group in report["groups"].values():
        if "pointing" not in group:  # reports from before the pointing probe
            continue
        lines.append(
            f"| {group['classes']} | {group['method']} | {pm(group['pointing'])} | "
            f"{group['pointing_centre_prior']['mean']:.3f} | {pm(group['pointing_swapped'])} | "
            f"{pm(group['pointing_swapped_blind'])} | "
            f"{group['pointing_n']['mean']:.0f} / {group['pointing_swapped_n']['mean']:.0f} |"
        )
    lines += ["", "| classes | prior | AP50 | AUC | mean cIoU |", "|---|---|---|---|---|"]
    for classes, priors in report["priors"].items():
        for name, value in priors.items():
            if isinstance(value, dict) and "ap50" in value:
                lines.append(
                    f"| {classes} | {name} | {value['ap50']:.3f} | {value['auc']:.3f} | {value['mean_ciou']:.3f} |"
                )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = experiment.argument_parser("python -m benchmarks.science", __doc__)
    p.add_argument(
        "-o", "--out", type=Path, required=True, help="work directory (resumable: finished runs are kept)"
    )
    p.add_argument("--classes", type=int, nargs="+", default=[5, 30], help="class counts K (default 5 30)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--methods",
        nargs="+",
        choices=sorted(METHODS),
        default=["fnac", "baseline"],
        help="fnac, baseline (contrastive only), fnac-nofns2 (FNAC without FNS-2), fnac-lambda1 (FNS-1, FNS-2 "
        "and TNE weighted 1 instead of 100), fnac-scaled (weighted 100·batch/256, the pull the recipe's 100 "
        "has at the official scripts' batch of 256), fnac-scaled-nofns2 (the same without FNS-2); default fnac "
        "baseline",
    )
    p.add_argument("--train", type=int, default=16000, help="training scenes per dataset")
    p.add_argument("--val", type=int, default=500)
    p.add_argument("--test", type=int, default=500)
    p.add_argument(
        "--distractors",
        type=int,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="silent distractors per scene (default: the headroom preset's 2 4); with few classes, fewer "
        "distractors keep the frame's set of classes informative",
    )
    p.add_argument("--data-image-size", type=int, default=128, help="frame size the datasets are drawn at")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--warmup-epochs", type=int, default=5)
    p.add_argument(
        "--shared-warmup",
        action="store_true",
        help="train each (K, seed)'s contrastive warm-up once and branch every method from it (see above)",
    )
    experiment.add_model_arguments(p, batch_size=128, width=32, dim=128, image_size=128)
    p.add_argument("--dropout-img", type=float, default=0.0)
    p.add_argument("--time-limit", type=float, help="seconds; a run past it is stopped and its best.pt used")
    experiment.add_run_arguments(p, parallel=1, parallel_help="training runs at once (one GPU holds many)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = experiment.begin(args)

    from model.config import FNACConfig
    from training.evaluate import evaluate

    datasets, priors = {}, {}
    for classes in args.classes:
        start = time.perf_counter()
        config = FNACConfig(width=args.width, dim=args.dim, image_size=args.image_size)
        datasets[classes], priors[classes] = experiment.dataset(args, classes, config)
        log.info("dataset K=%d ready in %.0f s", classes, time.perf_counter() - start)

    specs = run_names(args)
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        walls = {r["name"]: r for r in pool.map(lambda spec: train_one(spec, datasets[spec[1]], args), specs)}

    results = []
    for name, classes, method, seed in specs:
        run_dir = args.out / "runs" / name
        if not (run_dir / "best.pt").is_file():
            log.warning("%s has no best.pt; left out", name)
            continue
        report, _, _ = evaluate(run_dir / "best.pt", datasets[classes], negatives=False, progress=False)
        history = experiment.history(run_dir)
        best_epoch = history[-1]["best_epoch"]
        results.append(
            {
                "name": name, "classes": classes, "method": method, "seed": seed,
                "ap50": report["ap50"], "auc": report["auc"], "mean_ciou": report["mean_ciou"], "n": report["n"],
                "best_epoch": best_epoch, "epochs_done": len(history), "wall_seconds": walls[name]["wall_seconds"],
                "exit": walls[name].get("exit", 0),
                "val_ap50_by_epoch": [row.get("val_ap50") for row in history],
                "train_contrastive_by_epoch": [row.get("train_contrastive") for row in history],
                "collapsed": _collapsed(history[-1]),
                "probe": adjacency_probe(run_dir / "best.pt", datasets[classes], args.batch_size, args.probe_batches, device),
                "pointing": pointing_probe(run_dir / "best.pt", datasets[classes]),
            }
        )  # fmt: skip
        log.info(
            "%s: test AP50 %.3f AUC %.3f (best epoch %d of %d)",
            name,
            report["ap50"],
            report["auc"],
            best_epoch,
            len(history),
        )
        # after every run, so an interrupted analysis keeps what it has
        (args.out / "science.json").write_text(json.dumps(summarize(args, results, priors), indent=1) + "\n")
    report = summarize(args, results, priors)
    experiment.write_report(args.out, "science", report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
