"""One epoch of training: every rank's batches through the model, embeddings gathered over the global batch,
the FNAC loss (or the contrastive one alone), one optimizer step per batch."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from model.losses import fnac_loss
from training import distributed as D
from training.distributed import DistInfo
from training.sampler import false_negative_pairs
from training.train_options import TrainOptions
from training.train_setup import Trainee

log = logging.getLogger("fnac.train")


@dataclass
class EpochStats:
    """What one epoch of training measured; counts are over the global batch."""

    global_step: int  # optimizer steps of the run so far, this epoch included
    sums: dict[str, float] = field(
        default_factory=lambda: {"loss": 0.0}
    )  # loss and its parts, summed per step
    steps: int = 0
    seen: int = 0  # samples trained on (all ranks)
    skipped: int = 0  # batches with too few samples to train on
    global_batch: int = 0  # the largest global batch
    false_negatives: list[int] = field(default_factory=lambda: [0, 0])  # same-class pairs, all off-diagonal
    failed: list[str] = field(default_factory=list)  # ids that failed to decode, on all ranks
    loss_steps: list[tuple[int, float]] = field(default_factory=list)  # (global step, loss) curve points
    seconds: float = 0.0


def train_one_epoch(
    model: nn.Module,
    trainee: Trainee,
    loader,
    epoch: int,
    global_step: int,
    class_of: dict[str, int] | None,
    options: TrainOptions,
    dist: DistInfo,
) -> EpochStats:
    """Train `model` (the trainee's forward pass, or DDP around it) for epoch `epoch` (0-based) over `loader`."""
    loader.sampler.set_epoch(epoch)
    trainee.forward.train()
    stats = EpochStats(global_step=global_step)
    failed: list[str] = []
    epoch_start = time.perf_counter()
    bar = _progress(loader, dist.is_main and options.progress, f"epoch {epoch + 1}/{options.epochs}")
    for batch in bar:
        failed += batch["failed"]
        sizes = D.gather_sizes(len(batch["ids"]), dist.device)
        if min(sizes) == 0 or sum(sizes) < 2:
            stats.skipped += 1
            continue
        image = batch["image"].to(dist.device, non_blocking=True)
        audio = batch["audio"].to(dist.device, non_blocking=True)
        v, a = model(image, audio)  # local [n, D, h, w], [n, D]
        v = D.all_gather_with_grad(v, sizes)  # global [ΣB, D, h, w]
        a = D.all_gather_with_grad(a, sizes)
        if class_of is not None:  # measured on the batches trained on, failed samples dropped
            labels = torch.tensor([class_of[i] for i in batch["ids"]], device=dist.device)
            pairs = false_negative_pairs(D.all_gather_with_grad(labels, sizes))
            stats.false_negatives = [stats.false_negatives[0] + pairs[0], stats.false_negatives[1] + pairs[1]]
        loss, parts = fnac_loss(v, a, trainee.fnac.tau, epoch, trainee.weights)
        trainee.optimizer.zero_grad(set_to_none=True)
        trainee.scaler.scale(loss).backward()
        trainee.scaler.step(trainee.optimizer)
        trainee.scaler.update()
        stats.steps += 1
        stats.global_step += 1
        stats.seen += sum(sizes)
        stats.global_batch = max(stats.global_batch, a.shape[0])
        value = float(loss.detach())
        stats.sums["loss"] += value
        for key, part in parts.items():
            stats.sums[key] = stats.sums.get(key, 0.0) + float(part)
        if stats.global_step % max(1, options.log_every) == 0 or stats.steps == 1:
            stats.loss_steps.append((stats.global_step, value))
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
    if hasattr(bar, "close"):
        bar.close()
    stats.seconds = time.perf_counter() - epoch_start
    stats.failed = [f for part in D.all_gather_objects(failed) for f in part]
    if stats.failed and dist.is_main:
        shown = ", ".join(stats.failed[:10]) + (" …" if len(stats.failed) > 10 else "")
        log.warning(
            "epoch %d: %d samples failed to decode and were dropped: %s",
            epoch + 1,
            len(stats.failed),
            shown,
        )
    return stats


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)
