"""`fnac train --data DIR -o RUN`: the FNAC training recipe (or the EZ-VSL contrastive baseline).

Recipe (docs/METHOD.md, "Training recipe"): Adam lr 1e-4, weight decay 1e-4; contrastive loss alone for the
warm-up epochs, then contrastive + 100·FNS-1 + 100·FNS-2 + 100·TNE; image augmentation Resize(1.1·S) bicubic →
RandomCrop(S) → HFlip (in the dataset); one frequency mask and one time mask (width < 10 bins, filled with 0)
per example on the spectrogram the model's own front end computes, batched.

Runs as one process or under ``torchrun --nproc_per_node N`` (gloo on CPU, NCCL on GPU). ``--batch-size`` is the
GLOBAL batch: each rank loads its share, and v and a are all-gathered with gradients so the contrastive
negatives and the FNS/TNE adjacencies cover the whole global batch. Only rank 0 writes. For example
``torchrun --nproc_per_node 4 -m training.train --data DIR -o RUN`` (or ``torchrun ... $(which fnac) train ...``;
multi-node with torchrun's usual ``--nnodes/--node_rank/--rdzv_endpoint``).

Every epoch: validation on the VALIDATION split (official-protocol AP50 / mean cIoU when it has boxes, else the
contrastive loss and in-batch retrieval accuracy; never the test split), then ``RUN/best.pt`` and
``RUN/last.pt`` written atomically, ``RUN/metrics.jsonl`` and ``RUN/curve.png`` rewritten. ``--resume``
continues from ``RUN/last.pt``: a kill mid-epoch loses at most that epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.atomic import atomic_path, atomic_write_text, remove_stale_temporaries
from model.config import FNACConfig
from model.fnac import FNAC
from model.losses import RECIPE_BATCH, LossWeights, matched_weight
from training.sampler import false_negative_pairs

log = logging.getLogger("fnac.train")


@dataclass
class TrainOptions:
    """Everything about a run except the network's shape (FNACConfig) and the paths."""

    epochs: int = 20
    batch_size: int = 128  # global batch (all ranks together)
    lr: float = 1e-4
    weight_decay: float = 1e-4
    # the loss weights' defaults are LossWeights' (model/losses.py), not copies
    warmup_epochs: int = LossWeights.warmup_epochs
    fns1: float = LossWeights.fns1
    fns2: float = LossWeights.fns2
    tne: float = LossWeights.tne
    baseline: bool = LossWeights.contrastive_only  # contrastive only (EZ-VSL)
    spec_augment: bool = True
    freq_mask: int = 10  # mask widths are drawn from [0, freq_mask)
    time_mask: int = 10
    audio_window: str = "center"  # or "random" (random offset inside longer stored audio)
    seed: int = 0
    workers: int = 4  # DataLoader processes per rank
    amp: str = "auto"  # auto (bf16/fp16 on GPU, off on CPU) | bf16 | fp16 | off
    device: str | None = None  # cpu | cuda | None (cuda when available)
    train_split: str = "train"
    val_split: str = "val"
    val_data: str | None = None  # a separate validation source (directory or manifest)
    val_fraction: float = 0.0  # hold out this fraction of train when there is no validation split
    val_batch_size: int | None = None
    max_samples: int | None = None  # use only the first N training samples (quick runs)
    interpolation: str = "bicubic"  # heatmap upsampling for validation cIoU (official train-time choice)
    resume: bool = False
    progress: bool = True
    name: str | None = None
    log_every: int = 10  # steps between loss-curve points
    cache: bool = False  # decode the training set once, augment batches on the device (training/cache.py)
    cache_dir: str | None = None  # keep the decoded arrays here, shared by later runs on the same data
    # start from these weights (a checkpoint, e.g. from `fnac import`), with a new optimizer
    init_from: str | None = None
    # research option: batches drawn from this many classes, or from the number nearest this false-negative
    # rate (training/sampler.py); classes from the data's annotations or this file
    classes_per_batch: int | None = None
    fn_rate: float | None = None
    class_labels: str | None = None


class SpecAugment(nn.Module):
    """One frequency mask and one time mask per example (iid over the batch), each of width < 10 bins, 0-filled.

    Applied to the model's log spectrogram [B, 1, F, T] after its ÷12 scaling, which is the same as masking
    before it since the fill value is 0.
    """

    def __init__(self, freq_mask: int = 10, time_mask: int = 10):
        super().__init__()
        import torchaudio.transforms as T

        self.freq = T.FrequencyMasking(freq_mask, iid_masks=True)
        self.time = T.TimeMasking(time_mask, iid_masks=True)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.time(self.freq(spec))


class TrainForward(nn.Module):
    """What DDP wraps: the front end in fp32 (a spectrogram in bf16 would lose the log's precision), spec masks,
    then both encoders under autocast; returns fp32 (v [B, D, h, w], a [B, D])."""

    def __init__(self, fnac: FNAC, spec_augment: nn.Module | None, amp_dtype: torch.dtype | None):
        super().__init__()
        self.fnac = fnac
        self.spec_augment = spec_augment
        self.amp_dtype = amp_dtype

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.fnac.spectrogram(audio.float())  # [B, 1, F, T]
        if self.training and self.spec_augment is not None:
            spec = self.spec_augment(spec)
        with _autocast(image.device, self.amp_dtype):
            v = self.fnac.encode_image(image)
            a = self.fnac.encode_spectrogram(spec)
        return v.float(), a.float()


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or amp == "off":
        return None  # AMP on GPU only
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


# ---------------------------------------------------------------------------------------------- data


def _loader(
    dataset,
    batch_size: int,
    *,
    shuffle: bool,
    drop_last: bool,
    dist,
    options: TrainOptions,
    seed: int,
    sampler=None,
):
    from torch.utils.data import DataLoader, DistributedSampler

    from training.datasets import collate_pairs

    # A DistributedSampler also in one process: the shuffle depends only on (seed, epoch), so a resumed run
    # sees the same order.
    sampler = sampler or DistributedSampler(
        dataset,
        num_replicas=dist.world_size,
        rank=dist.rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=options.workers,
        collate_fn=collate_pairs,
        pin_memory=dist.device.type == "cuda",
        drop_last=drop_last,
        # Not persistent: workers are re-seeded from the (checkpointed) torch RNG every epoch.
        persistent_workers=False,
    )


def build_datasets(data: str | Path, config: FNACConfig, options: TrainOptions):
    """(train dataset, validation dataset or None, description of the data)."""
    from training.datasets import PairDataset, find_samples, holdout_split, open_dataset

    train_set = open_dataset(data, config, options.train_split, train=True, audio_window=options.audio_window)
    if options.max_samples:
        train_set.samples = train_set.samples[: options.max_samples]
    val_set = None
    if options.val_data:
        val_set = open_dataset(options.val_data, config, options.val_split, train=False)
    else:
        val_samples, _ = find_samples(data, options.val_split)
        if val_samples:
            val_set = open_dataset(data, config, options.val_split, train=False)
        elif options.val_fraction > 0:
            kept, held = holdout_split(train_set.samples, options.val_fraction, options.seed)
            train_set.samples = kept
            val_set = PairDataset(held, config, train=False, with_gt=True, info={"split": "held-out"})
    if val_set is not None and len(val_set) == 0:
        log.warning(
            "validation split '%s' has no usable samples; best.pt will be the last epoch", options.val_split
        )
        val_set = None
    if len(train_set) == 0:
        raise _dataset_error(f"no training samples in {data} (split '{options.train_split}')")
    description = {
        "source": str(data),
        "layout": train_set.info.get("layout"),
        "train_split": options.train_split,
        "train_samples": len(train_set),
        "val_source": str(options.val_data or data) if val_set is not None else None,
        "val_split": (val_set.info.get("split") if val_set is not None else None),
        "val_samples": len(val_set) if val_set is not None else 0,
        "val_has_boxes": bool(val_set is not None and val_set.has_boxes),
    }
    return train_set, val_set, description


def class_sampler(data: str | Path, ids: list[str], options: TrainOptions, dist):
    """(ClassBatchSampler, class index by id) for --classes-per-batch / --fn-rate, else (None, None)."""
    if options.classes_per_batch is None and options.fn_rate is None:
        return None, None
    from training.sampler import ClassBatchSampler, class_labels, classes_for_rate

    labels, names = class_labels(data, ids, options.class_labels)
    per_batch, share = options.classes_per_batch, 0.0
    if per_batch is None:
        per_batch, share = classes_for_rate(options.fn_rate, options.batch_size, len(names))
    sampler = ClassBatchSampler(
        labels,
        options.batch_size,
        per_batch,
        rank=dist.rank,
        world_size=dist.world_size,
        seed=options.seed,
        more_classes_share=share,
    )
    if dist.is_main:
        log.info(
            "batches from %d%s of %d classes: in-batch false-negative rate %.4f",
            per_batch,
            f" ({share:.0%} of them {per_batch + 1})" if share else "",
            len(names),
            sampler.rate,
        )
    return sampler, dict(zip(ids, labels, strict=True))


def _dataset_error(message: str) -> Exception:
    from training.datasets import DatasetError

    return DatasetError(message)


# ---------------------------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(fnac: FNAC, dataset, dist, options: TrainOptions, amp_dtype) -> dict[str, Any]:
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
        with _autocast(dist.device, amp_dtype):
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


def selection_key(val: dict[str, Any] | None) -> tuple[str, tuple[float, ...]]:
    """(what is compared, key: larger is better). AP50 then mean cIoU with boxes; else −val loss."""
    if not val:
        return "last epoch (no validation split)", (0.0,)
    if "val_ap50" in val:
        return "val AP50 (official protocol), then mean cIoU", (val["val_ap50"], val["val_mean_ciou"])
    loss = val.get("val_loss", math.nan)
    return "val contrastive loss", (-loss if math.isfinite(loss) else -math.inf,)


# ---------------------------------------------------------------------------------------------- state


def _rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    random.setstate((state["python_version"], tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """RUN/metrics.jsonl, one JSON object per completed epoch (rewritten whole, atomically)."""
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(_json_safe(r)) + "\n" for r in history))


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


# ---------------------------------------------------------------------------------------------- training


def train(
    config: FNACConfig,
    data: str | Path,
    out: str | Path,
    options: TrainOptions | None = None,
) -> dict[str, Any]:
    """Train on `data` (directory or manifest) into `out`; returns the summary (also in RUN/summary.json).

    Works in-process (tests, benchmarks) and under torchrun (every rank calls it).
    """
    from model.checkpoint import atomic_save, make_checkpoint, read_checkpoint
    from model.losses import fnac_loss
    from training import distributed as D

    options = options or TrainOptions()
    out = Path(out)
    owns_group = not torch.distributed.is_initialized()  # leave a caller's process group alone
    dist = D.setup(options.device)
    started = time.perf_counter()
    try:
        if options.batch_size % dist.world_size:
            raise ValueError(
                f"--batch-size {options.batch_size} (global) is not divisible by {dist.world_size} processes"
            )
        local_batch = options.batch_size // dist.world_size
        resume_from = None
        last_path = out / "last.pt"
        if dist.is_main and out.is_dir():  # a kill during a checkpoint write leaves its temporary file behind
            for stale in remove_stale_temporaries(out):
                log.info("removed %s, left by an interrupted write", stale.name)
        if options.resume and last_path.is_file():
            resume_from = read_checkpoint(last_path)
            config = _stored_config(resume_from, config, f"resuming from {last_path}")
        elif options.resume:
            log.warning("--resume: %s does not exist, starting from scratch", last_path)
        elif last_path.exists():
            raise FileExistsError(f"{out} already holds a run (last.pt); pass --resume or choose another -o")
        init_from = None
        if resume_from is None and options.init_from:
            init_from = read_checkpoint(options.init_from)
            config = _stored_config(init_from, config, f"--init-from {options.init_from}")

        torch.manual_seed(options.seed)  # identical initial weights on every rank
        np.random.seed(options.seed)
        random.seed(options.seed)
        fnac = FNAC(config)
        if init_from is not None:
            fnac.load_state_dict(init_from["model"])
            if dist.is_main:
                log.info(
                    "initialised from %s (weights %s)",
                    options.init_from,
                    init_from.get("metadata", {}).get("weights_sha256", "?")[:12],
                )
        fnac = fnac.to(dist.device)
        amp_dtype = _amp_dtype(options.amp, dist.device)
        spec_augment = SpecAugment(options.freq_mask, options.time_mask) if options.spec_augment else None
        forward = TrainForward(fnac, spec_augment, amp_dtype)
        optimizer = torch.optim.Adam(fnac.parameters(), lr=options.lr, weight_decay=options.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        weights = LossWeights(
            fns1=options.fns1,
            fns2=options.fns2,
            tne=options.tne,
            warmup_epochs=options.warmup_epochs,
            contrastive_only=options.baseline,
        )

        if dist.is_main and (warning := small_batch_warning(weights, options.batch_size)):
            log.warning(warning)

        train_set, val_set, data_info = build_datasets(data, config, options)
        if len(train_set) < options.batch_size:
            raise ValueError(
                f"{len(train_set)} training samples is fewer than one batch of {options.batch_size}"
            )

        start_epoch, history = 0, []
        best = {"epoch": 0, "key": None}
        elapsed_before = 0.0
        if resume_from is not None:
            fnac.load_state_dict(resume_from["model"])
            optimizer.load_state_dict(resume_from["optimizer"])
            if "scaler" in resume_from and scaler.is_enabled():
                scaler.load_state_dict(resume_from["scaler"])
            state = resume_from["train_state"]
            start_epoch = int(resume_from["epoch"])
            history = list(state["history"])
            best = dict(state["best"])
            best["key"] = tuple(best["key"]) if best["key"] is not None else None
            elapsed_before = float(state.get("wall_seconds", 0.0))
            rng = state.get("rng", [])
            if len(rng) == dist.world_size:
                _set_rng_state(rng[dist.rank])
            else:
                torch.manual_seed(options.seed + 7919 * (start_epoch + 1) + dist.rank)
            if dist.is_main:
                log.info("resumed from %s after epoch %d", last_path, start_epoch)
        else:
            torch.manual_seed(options.seed + 1 + dist.rank)  # per-rank augmentation streams

        model: nn.Module = forward
        if dist.enabled:
            model = nn.parallel.DistributedDataParallel(
                forward, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
            )
        if options.cache:
            from training.cache import CachedLoader, load_or_build

            if options.cache_dir and not dist.is_main:
                D.barrier()  # rank 0 decodes and writes the arrays; the others then read them
            arrays = load_or_build(
                train_set, options.cache_dir, options.workers, progress=dist.is_main and options.progress
            )
            if options.cache_dir and dist.is_main:
                D.barrier()
            sampler, class_of = class_sampler(data, list(arrays["ids"]), options, dist)
            loader = CachedLoader(
                arrays, config.image_size, local_batch, dist=dist, seed=options.seed, sampler=sampler
            )
            del arrays
        else:
            sampler, class_of = class_sampler(data, [s.id for s in train_set.samples], options, dist)
            loader = _loader(
                train_set,
                local_batch,
                shuffle=True,
                drop_last=True,
                dist=dist,
                options=options,
                seed=options.seed,
                sampler=sampler,
            )
        if len(loader) == 0:
            raise ValueError(f"{len(train_set)} training samples give no full batch of {options.batch_size}")
        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            log.info(
                "training on %d samples (%s), validating on %d, global batch %d over %d process(es), device %s%s",
                len(train_set),
                data_info["layout"],
                data_info["val_samples"],
                options.batch_size,
                dist.world_size,
                dist.device,
                f", autocast {amp_dtype}" if amp_dtype else "",
            )

        global_step = history[-1]["global_step"] if history else 0
        for epoch in range(start_epoch, options.epochs):
            loader.sampler.set_epoch(epoch)
            forward.train()
            sums = {"loss": 0.0}
            n_steps = n_seen = skipped = 0
            global_batch = 0
            false_negatives = [0, 0]  # same-class off-diagonal pairs, all off-diagonal pairs (global batches)
            failed: list[str] = []
            loss_steps = []
            epoch_start = time.perf_counter()
            bar = _progress(loader, dist.is_main and options.progress, f"epoch {epoch + 1}/{options.epochs}")
            for batch in bar:
                failed += batch["failed"]
                sizes = D.gather_sizes(len(batch["ids"]), dist.device)
                if min(sizes) == 0 or sum(sizes) < 2:
                    skipped += 1
                    continue
                image = batch["image"].to(dist.device, non_blocking=True)
                audio = batch["audio"].to(dist.device, non_blocking=True)
                v, a = model(image, audio)  # local [n, D, h, w], [n, D]
                v = D.all_gather_with_grad(v, sizes)  # global [ΣB, D, h, w]
                a = D.all_gather_with_grad(a, sizes)
                if class_of is not None:  # measured on the batches trained on, failed samples dropped
                    labels = torch.tensor([class_of[i] for i in batch["ids"]], device=dist.device)
                    pairs = false_negative_pairs(D.all_gather_with_grad(labels, sizes))
                    false_negatives = [false_negatives[0] + pairs[0], false_negatives[1] + pairs[1]]
                loss, parts = fnac_loss(v, a, fnac.tau, epoch, weights)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                n_steps += 1
                global_step += 1
                n_seen += sum(sizes)
                global_batch = max(global_batch, a.shape[0])
                value = float(loss.detach())
                sums["loss"] += value
                for key, part in parts.items():
                    sums[key] = sums.get(key, 0.0) + float(part)
                if global_step % max(1, options.log_every) == 0 or n_steps == 1:
                    loss_steps.append((global_step, value))
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{value:.4f}", refresh=False)
            if hasattr(bar, "close"):
                bar.close()
            train_seconds = time.perf_counter() - epoch_start
            failed_all = [f for part in D.all_gather_objects(failed) for f in part]
            if failed_all and dist.is_main:
                shown = ", ".join(failed_all[:10]) + (" …" if len(failed_all) > 10 else "")
                log.warning(
                    "epoch %d: %d samples failed to decode and were dropped: %s",
                    epoch + 1,
                    len(failed_all),
                    shown,
                )

            val = validate(fnac, val_set, dist, options, amp_dtype) if val_set is not None else None
            criterion, key = selection_key(val)
            is_best = best["key"] is None or key >= best["key"]
            if is_best:
                best = {"epoch": epoch + 1, "key": key}
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "global_step": global_step,
                "phase": "contrastive" if (options.baseline or epoch < options.warmup_epochs) else "fnac",
                "train_loss": sums["loss"] / max(1, n_steps),
                **{f"train_{k}": v / max(1, n_steps) for k, v in sums.items() if k != "loss"},
                "steps": n_steps,
                "skipped_steps": skipped,
                "global_batch": global_batch,
                "world_size": dist.world_size,
                "failed_samples": len(failed_all),
                "failed_ids": failed_all[:100],
                "samples_per_s": n_seen / train_seconds if train_seconds > 0 else math.nan,
                "epoch_seconds": train_seconds,
                "wall_seconds": elapsed_before + time.perf_counter() - started,
                "lr": optimizer.param_groups[0]["lr"],
                "contrastive_chance": contrastive_chance(global_batch),
                **(
                    {
                        "fn_rate": false_negatives[0] / max(1, false_negatives[1]),
                        "fn_rate_target": sampler.rate,
                        "classes_per_batch": sampler.classes_per_batch,
                        "more_classes_share": sampler.more_classes_share,
                    }
                    if sampler is not None
                    else {}
                ),
                **(val or {}),
                "best_epoch": best["epoch"],
                "selection": criterion,
                "loss_steps": loss_steps,
            }
            history.append(row)
            rng_all = D.all_gather_objects(_rng_state())
            if dist.is_main:
                checkpoint = make_checkpoint(
                    fnac,
                    {
                        "model_name": options.name or out.name,
                        "training_data": _describe(data_info),
                        "trained_epochs": epoch + 1,
                        "loss": "contrastive (EZ-VSL baseline)" if options.baseline else "FNAC",
                        "selection": criterion,
                        **({"initialized_from": str(options.init_from)} if options.init_from else {}),
                    },
                    optimizer=optimizer.state_dict(),
                    epoch=epoch + 1,
                    **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {}),
                    train_state={
                        "options": _json_safe(dataclasses.asdict(options)),
                        "data": _json_safe(data_info),
                        "history": _json_safe(history),
                        "best": {"epoch": best["epoch"], "key": list(best["key"])},
                        "rng": rng_all,
                        "world_size": dist.world_size,
                        "wall_seconds": row["wall_seconds"],
                    },
                )
                # best first: a kill between the two writes leaves last.pt at the previous epoch, which is
                # then redone; the reverse order could leave a best.pt older than what last.pt records.
                if is_best:
                    atomic_save(checkpoint, out / "best.pt")
                atomic_save(checkpoint, last_path)
                write_metrics(out, history)
                write_curve(out, history)
                log.info("epoch %d: %s", epoch + 1, _epoch_line(row))
                if warning := collapse_warning(row):
                    log.warning("epoch %d: %s", epoch + 1, warning)
            D.barrier()

        summary = {
            "epochs": options.epochs,
            "best_epoch": best["epoch"],
            "selection": selection_key(history[-1] if history else None)[0],
            "final": _json_safe(
                {k: v for k, v in (history[-1] if history else {}).items() if k != "loss_steps"}
            ),
            "best": _json_safe(
                {k: v for k, v in history[best["epoch"] - 1].items() if k != "loss_steps"} if history else {}
            ),
            "wall_seconds": elapsed_before + time.perf_counter() - started,
            "data": _json_safe(data_info),
            "out": str(out),
        }
        if dist.is_main and history:
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary
    finally:
        if owns_group:
            D.teardown()


def _stored_config(checkpoint: dict[str, Any], given: FNACConfig, context: str) -> FNACConfig:
    """The network shape a checkpoint was trained with; it wins over the one given on the command line."""
    saved = FNACConfig.from_dict(checkpoint["config"])
    if saved != given:
        log.warning("%s: using the network config stored there (ignoring the one given)", context)
    return saved


def _describe(info: dict[str, Any]) -> str:
    return (
        f"{info['layout']} data at {info['source']}: {info['train_samples']} train samples "
        f"(split {info['train_split']}), {info['val_samples']} val samples"
    )


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


def _epoch_line(row: dict[str, Any]) -> str:
    parts = [f"loss {row['train_loss']:.4f}", f"{row['samples_per_s']:.1f} samples/s"]
    for key in ("val_ap50", "val_mean_ciou", "val_loss", "val_retrieval_top1"):
        if row.get(key) is not None and not (isinstance(row[key], float) and math.isnan(row[key])):
            parts.append(f"{key} {row[key]:.4f}")
    if row["failed_samples"]:
        parts.append(f"{row['failed_samples']} failed samples")
    parts.append(f"best epoch {row['best_epoch']}")
    return ", ".join(parts)


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `fnac train`."""
    defaults = TrainOptions()
    model_defaults = FNACConfig()
    p.add_argument(
        "--data", required=True, help="dataset directory (VGG-SS or Flickr layout) or manifest CSV"
    )
    p.add_argument(
        "-o", "--output", required=True, help="run directory (best.pt, last.pt, metrics.jsonl, curve.png)"
    )
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    g = p.add_argument_group("recipe")
    g.add_argument("--epochs", type=int, default=defaults.epochs, help="default %(default)s")
    g.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="GLOBAL batch over all processes (default %(default)s)",
    )
    g.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate (default %(default)s)")
    g.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="default %(default)s")
    g.add_argument(
        "--warmup-epochs",
        type=int,
        default=defaults.warmup_epochs,
        help="contrastive-only epochs before FNS/TNE (default %(default)s)",
    )
    g.add_argument(
        "--fns1",
        type=float,
        default=defaults.fns1,
        help=f"FNS-1 weight (audio adjacency; default %(default)s, the official recipe's at its global batch of "
        f"{RECIPE_BATCH}; the terms are bounded by 2/batch, so a smaller batch wants 100*batch/{RECIPE_BATCH}, "
        "and training warns)",
    )
    g.add_argument(
        "--fns2",
        type=float,
        default=defaults.fns2,
        help="FNS-2 weight (image adjacency; default %(default)s)",
    )
    g.add_argument("--tne", type=float, default=defaults.tne, help="TNE weight (default %(default)s)")
    g.add_argument("--baseline", action="store_true", help="contrastive loss only (the EZ-VSL baseline)")
    g.add_argument(
        "--no-spec-augment", dest="spec_augment", action="store_false", help="no spectrogram masks"
    )
    g.add_argument(
        "--freq-mask",
        type=int,
        default=defaults.freq_mask,
        help="max frequency-mask width, exclusive (default %(default)s)",
    )
    g.add_argument(
        "--time-mask",
        type=int,
        default=defaults.time_mask,
        help="max time-mask width, exclusive (default %(default)s)",
    )
    g.add_argument(
        "--audio-window",
        choices=["center", "random"],
        default=defaults.audio_window,
        help="training audio window: centred as the reference (default) or at a random offset in longer audio",
    )
    g.add_argument("--seed", type=int, default=defaults.seed, help="default %(default)s")
    g.add_argument(
        "--init-from",
        metavar="CKPT",
        help="start from the weights of this checkpoint (e.g. an official model after `fnac import`, or a "
        "finished run for a lower-learning-rate phase); the optimizer starts fresh and the network shape "
        "comes from the checkpoint",
    )
    g = p.add_argument_group("network (stored in the checkpoint)")
    g.add_argument(
        "--width", type=int, default=model_defaults.width, help="ResNet-18 base width (64 = paper)"
    )
    g.add_argument("--dim", type=int, default=model_defaults.dim, help="embedding dimension (512 = paper)")
    g.add_argument(
        "--image-size", type=int, default=model_defaults.image_size, help="input side S (224 = paper)"
    )
    g.add_argument(
        "--sample-rate", type=int, default=model_defaults.sample_rate, help="model sample rate, Hz"
    )
    g.add_argument("--clip-seconds", type=float, default=model_defaults.clip_seconds, help="audio window, s")
    g.add_argument(
        "--tau", type=float, default=model_defaults.tau, help="temperature τ (default %(default)s)"
    )
    g.add_argument(
        "--dropout-img",
        type=float,
        default=model_defaults.dropout_img,
        help="visual dropout (default %(default)s)",
    )
    g = p.add_argument_group("data and validation")
    g.add_argument("--train-split", default=defaults.train_split, help="default %(default)s")
    g.add_argument(
        "--val-split",
        default=defaults.val_split,
        help="model selection split (default %(default)s; never test)",
    )
    g.add_argument("--val-data", help="separate validation dataset (directory or manifest)")
    g.add_argument(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help="hold out this fraction of train when there is no validation split",
    )
    g.add_argument(
        "--val-batch-size", type=int, help="validation batch per process (default: the training one)"
    )
    g.add_argument(
        "--interpolation",
        choices=["bicubic", "bilinear"],
        default=defaults.interpolation,
        help="heatmap upsampling for validation cIoU (default %(default)s)",
    )
    g.add_argument("--max-samples", type=int, help="use only the first N training samples")
    g = p.add_argument_group(
        "false-negative control (research option; training/sampler.py)",
        "draw every global batch from a few classes, class-balanced and seeded, to set how many of its pairs "
        "are same-class (false negatives for the contrastive loss); metrics.jsonl reports the measured rate",
    )
    g.add_argument(
        "--classes-per-batch", type=int, metavar="M", help="each batch from M classes (rate about 1/M)"
    )
    g.add_argument("--fn-rate", type=float, metavar="R", help="in-batch false-negative rate: the nearest M")
    g.add_argument(
        "--class-labels",
        metavar="FILE",
        help='classes of the training samples (JSON list of {"file", "class"}); default: the data\'s '
        "annotations.json or vggss.json",
    )
    g.add_argument(
        "--cache",
        action="store_true",
        help="decode the training set once and crop/flip whole batches on the device (same augmentation); "
        "the decoded arrays stay in host memory (memory-mapped with --cache-dir) and the next batch is gathered "
        "in a background thread. Pays where the loaders limit training, as for small networks on a GPU "
        "(docs/BENCHMARKS.md)",
    )
    g.add_argument(
        "--cache-dir",
        help="with --cache: keep the decoded arrays here so later runs on the same data reuse them",
    )
    g = p.add_argument_group("execution")
    g.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        help="loader processes per rank (default %(default)s)",
    )
    g.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    g.add_argument(
        "--amp",
        choices=["auto", "bf16", "fp16", "off"],
        default=defaults.amp,
        help="autocast on GPU (default %(default)s; CPU always fp32)",
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g.add_argument(
        "--log-every", type=int, default=defaults.log_every, help="steps between loss-curve points"
    )
    g.add_argument("--name", help="model name recorded in the checkpoint (default: run directory name)")


def options_from_args(args: argparse.Namespace) -> tuple[FNACConfig, TrainOptions]:
    config = FNACConfig(
        width=args.width,
        dim=args.dim,
        image_size=args.image_size,
        sample_rate=args.sample_rate,
        clip_seconds=args.clip_seconds,
        tau=args.tau,
        dropout_img=args.dropout_img,
    )
    fields = {f.name for f in dataclasses.fields(TrainOptions)}
    options = TrainOptions(**{k: v for k, v in vars(args).items() if k in fields})
    if options.cache_dir:
        options.cache = True
    if options.classes_per_batch is not None and options.fn_rate is not None:
        raise ValueError("--classes-per-batch and --fn-rate set the same thing; give one")
    if options.val_split == "test":
        raise ValueError(
            "--val-split test: model selection on the test split is the official pitfall; use val"
        )
    return config, options


def run(args: argparse.Namespace) -> int:
    """`fnac train` entry point."""
    config, options = options_from_args(args)
    try:
        summary = train(config, args.data, args.output, options)
    except FileExistsError as exc:
        print(f"fnac train: error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        best = summary.get("best", {})
        print(
            f"trained {summary['epochs']} epochs in {summary['wall_seconds']:.0f} s; best epoch "
            f"{summary['best_epoch']} by {summary['selection']}: "
            + ", ".join(
                f"{k} {best[k]:.4f}"
                for k in ("val_ap50", "val_mean_ciou", "val_loss")
                if best.get(k) is not None
            )
            + f"; wrote {Path(args.output) / 'best.pt'} and last.pt"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
