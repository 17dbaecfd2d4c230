"""Validation during training: the VALIDATION split's metrics after each epoch, sharded over the ranks."""

from __future__ import annotations

import math
from typing import Any

import torch

from model.fnac import FNAC
from training.distributed import DistInfo
from training.train_forward import autocast
from training.train_options import TrainOptions


@torch.no_grad()
def validate(
    fnac: FNAC, dataset, dist: DistInfo, options: TrainOptions, amp_dtype: torch.dtype | None
) -> dict[str, Any]:
    """Validation metrics of `fnac` on `dataset` (sharded over ranks, gathered): the contrastive loss and
    in-batch retrieval top-1 always; the official-protocol AP50 / mean cIoU / AUC when the samples have boxes."""
    from torch.utils.data import DataLoader, Subset

    from model.fnac import localization_map
    from model.losses import contrastive_loss, pair_logits
    from training.datasets import collate_pairs
    from training.distributed import all_gather_objects
    from training.metrics import sample_ciou, summarize_cious

    was_training = fnac.training
    fnac.eval()
    shard = Subset(dataset, list(range(dist.rank, len(dataset), dist.world_size)))
    loader = DataLoader(
        shard,
        batch_size=options.val_batch_size or max(2, options.batch_size // dist.world_size),
        num_workers=options.workers,
        collate_fn=collate_pairs,
    )
    cious, failed = [], []
    loss_sum = correct = n_pairs = 0.0
    for batch in loader:
        failed += batch["failed"]
        if not batch["ids"]:
            continue
        image = batch["image"].to(dist.device, non_blocking=True)
        audio = batch["audio"].to(dist.device, non_blocking=True)
        spec = fnac.spectrogram(audio)
        with autocast(dist.device, amp_dtype):
            v, a = fnac.encode_image(image).float(), fnac.encode_spectrogram(spec).float()
        n = len(batch["ids"])
        if n >= 2:
            logits = pair_logits(v, a, fnac.tau)
            loss_sum += float(contrastive_loss(logits)) * n
            correct += float((logits.argmax(dim=1) == torch.arange(n, device=logits.device)).sum())
            n_pairs += n
        if "gt" in batch:
            heatmaps = localization_map(v, a, fnac.tau).cpu().numpy()
            for heatmap, gt in zip(heatmaps, batch["gt"].numpy(), strict=True):
                cious.append(sample_ciou(heatmap, gt, options.interpolation, backend="torch"))
    fnac.train(was_training)
    parts = all_gather_objects((cious, failed, loss_sum, correct, n_pairs))
    cious = [c for p in parts for c in p[0]]
    failed = [f for p in parts for f in p[1]]
    loss_sum, correct, n_pairs = (sum(p[k] for p in parts) for k in (2, 3, 4))
    result: dict[str, Any] = {
        "val_loss": loss_sum / n_pairs if n_pairs else math.nan,
        "val_retrieval_top1": correct / n_pairs if n_pairs else math.nan,
        "val_samples": len(dataset) - len(failed),
        "val_failed": len(failed),
    }
    if cious:
        summary = summarize_cious(cious)
        result.update(
            val_ap50=summary["ap50"],
            val_mean_ciou=summary["mean_ciou"],
            val_auc=summary["auc"],
            val_interpolation=options.interpolation,
        )
    return result
