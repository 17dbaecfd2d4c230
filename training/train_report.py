"""What a training run reports: one metrics row per epoch (RUN/metrics.jsonl), the loss and validation curves
(RUN/curve.png), the epoch's log line, the run summary (RUN/summary.json) and the warnings about the recipe."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from model.atomic import atomic_path, atomic_write_text
from model.losses import RECIPE_BATCH, LossWeights, matched_weight
from training.distributed import DistInfo
from training.train_epoch import EpochStats
from training.train_options import TrainOptions


def json_safe(value):
    """`value` with non-finite floats as None and paths as strings, for JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """RUN/metrics.jsonl, one JSON object per completed epoch (rewritten whole, atomically)."""
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(json_safe(r)) + "\n" for r in history))


def write_curve(out: Path, history: list[dict[str, Any]]) -> None:
    """RUN/curve.png: training loss per step and epoch, and the validation metric per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    steps = [p for r in history for p in r.get("loss_steps", [])]
    if steps:
        left.plot([s for s, _ in steps], [v for _, v in steps], color="0.7", linewidth=1, label="step")
    ends = [r["global_step"] for r in history]
    left.plot(ends, [r["train_loss"] for r in history], marker="o", label="epoch mean (total)")
    left.plot(ends, [r["train_contrastive"] for r in history], marker=".", label="epoch mean (contrastive)")
    left.set_xlabel("step")
    left.set_ylabel("training loss")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    epochs = [r["epoch"] for r in history]
    plotted = False
    for key, label in (("val_ap50", "val AP50"), ("val_mean_ciou", "val mean cIoU"), ("val_auc", "val AUC")):
        values = [r.get(key) for r in history]
        if any(v is not None for v in values):
            right.plot(epochs, [math.nan if v is None else v for v in values], marker="o", label=label)
            plotted = True
    if not plotted:
        values = [r.get("val_retrieval_top1") for r in history]
        if any(v is not None for v in values):
            right.plot(epochs, [math.nan if v is None else v for v in values], marker="o", label="val top-1")
            twin = right.twinx()
            twin.plot(epochs, [r.get("val_loss") or math.nan for r in history], color="C3", label="val loss")
            twin.set_ylabel("val contrastive loss")
    right.set_xlabel("epoch")
    right.set_title("validation")
    right.grid(alpha=0.3)
    right.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    try:
        with atomic_path(out / "curve.png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def epoch_row(
    epoch: int,
    stats: EpochStats,
    val: dict[str, Any] | None,
    *,
    options: TrainOptions,
    dist: DistInfo,
    sampler,
    lr: float,
    wall_seconds: float,
    best_epoch: int,
    selection: str,
) -> dict[str, Any]:
    """The metrics.jsonl row of epoch `epoch` (0-based): training `stats`, validation `val` and the selection."""
    n_steps = stats.steps
    return {
        "epoch": epoch + 1,
        "global_step": stats.global_step,
        "phase": "contrastive" if (options.baseline or epoch < options.warmup_epochs) else "fnac",
        "train_loss": stats.sums["loss"] / max(1, n_steps),
        **{f"train_{k}": v / max(1, n_steps) for k, v in stats.sums.items() if k != "loss"},
        "steps": n_steps,
        "skipped_steps": stats.skipped,
        "global_batch": stats.global_batch,
        "world_size": dist.world_size,
        "failed_samples": len(stats.failed),
        "failed_ids": stats.failed[:100],
        "samples_per_s": stats.seen / stats.seconds if stats.seconds > 0 else math.nan,
        "epoch_seconds": stats.seconds,
        "wall_seconds": wall_seconds,
        "lr": lr,
        "contrastive_chance": contrastive_chance(stats.global_batch),
        **(
            {
                "fn_rate": stats.false_negatives[0] / max(1, stats.false_negatives[1]),
                "fn_rate_target": sampler.rate,
                "classes_per_batch": sampler.classes_per_batch,
                "more_classes_share": sampler.more_classes_share,
            }
            if sampler is not None
            else {}
        ),
        **(val or {}),
        "best_epoch": best_epoch,
        "selection": selection,
        "loss_steps": stats.loss_steps,
    }


def epoch_line(row: dict[str, Any]) -> str:
    """The log line of an epoch's row."""
    parts = [f"loss {row['train_loss']:.4f}", f"{row['samples_per_s']:.1f} samples/s"]
    for key in ("val_ap50", "val_mean_ciou", "val_loss", "val_retrieval_top1"):
        if row.get(key) is not None and not (isinstance(row[key], float) and math.isnan(row[key])):
            parts.append(f"{key} {row[key]:.4f}")
    if row["failed_samples"]:
        parts.append(f"{row['failed_samples']} failed samples")
    parts.append(f"best epoch {row['best_epoch']}")
    return ", ".join(parts)


def run_summary(
    history: list[dict[str, Any]],
    best_epoch: int,
    selection: str,
    epochs: int,
    wall_seconds: float,
    data_info: dict[str, Any],
    out: Path,
) -> dict[str, Any]:
    """The summary of a run: its last and best epochs' rows (without the loss curve), the time, the data."""
    return {
        "epochs": epochs,
        "best_epoch": best_epoch,
        "selection": selection,
        "final": json_safe({k: v for k, v in (history[-1] if history else {}).items() if k != "loss_steps"}),
        "best": json_safe(
            {k: v for k, v in history[best_epoch - 1].items() if k != "loss_steps"} if history else {}
        ),
        "wall_seconds": wall_seconds,
        "data": json_safe(data_info),
        "out": str(out),
    }


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """RUN/summary.json."""
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")


def contrastive_chance(global_batch: int) -> float:
    """CE(L, diag) + CE(Lᵀ, diag) when every logit of a row is equal: the loss of collapsed encoders."""
    return 2 * math.log(global_batch)


def small_batch_warning(weights: LossWeights, global_batch: int) -> str | None:
    """A warning when the FNAC terms pull harder than in the official recipe (see `matched_weight`)."""
    if weights.contrastive_only:
        return None
    scaled = matched_weight(global_batch)
    # the official code itself runs weight 100 at batch 128 (its argparse default) and 256 (its scripts)
    if max(weights.fns1, weights.fns2, weights.tne) <= 2 * scaled:
        return None
    return (
        f"global batch {global_batch} with FNAC weights {weights.fns1:g}/{weights.fns2:g}/{weights.tne:g} "
        f"(FNS-1/FNS-2/TNE): these terms are bounded by 2/batch, so here they pull {RECIPE_BATCH / global_batch:g}x "
        f"harder than the recipe's 100 at its batch of {RECIPE_BATCH}. The weights that match it are "
        f"--fns1 {scaled:g} --fns2 {scaled:g} --tne {scaled:g}. Too strong, they can collapse the embeddings "
        "(docs/BENCHMARKS.md)."
    )


def collapse_warning(row: dict[str, Any], tolerance: float = 1e-3) -> str | None:
    """A warning when an FNAC-phase epoch ends with the contrastive loss at its chance value (within
    `tolerance`, relative). FNS-1, FNS-2 and TNE are all exactly zero when every embedding is the same, so
    switched on too strongly (weights above the recipe's pull for this batch, see `small_batch_warning`) or
    before the encoders tell pairs apart, they can pull the network into that collapsed state, where it stays."""
    chance, contrastive = row.get("contrastive_chance"), row.get("train_contrastive")
    if row.get("phase") != "fnac" or chance is None or contrastive is None:
        return None
    if abs(contrastive - chance) > tolerance * chance:
        return None
    return (
        f"the contrastive loss is at chance level ({contrastive:.4f}; 2·ln(batch) = {chance:.4f}) with the FNAC "
        "terms on: the embeddings have probably collapsed (all logits equal, where FNS/TNE are zero). Start "
        f"again with FNAC weights matched to the batch (--fns1/--fns2/--tne 100*batch/{RECIPE_BATCH}) and a "
        "--warmup-epochs long enough that the contrastive loss has clearly left chance (docs/BENCHMARKS.md)."
    )
