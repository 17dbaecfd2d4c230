"""The data of a training run: the training and validation datasets, and the loader of training batches (the
plain DataLoader, or the decoded cache with batches augmented on the device; optionally class-controlled)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from model.config import FNACConfig
from training import distributed as D
from training.distributed import DistInfo
from training.train_options import TrainOptions

log = logging.getLogger("fnac.train")


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


def train_loader(
    data: str | Path, train_set, config: FNACConfig, local_batch: int, options: TrainOptions, dist: DistInfo
):
    """(loader of this rank's training batches, ClassBatchSampler or None, class index by id or None)."""
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
    return loader, sampler, class_of


def describe(info: dict[str, Any]) -> str:
    """One line about the data of a run (`build_datasets`' description), for the checkpoint's metadata."""
    return (
        f"{info['layout']} data at {info['source']}: {info['train_samples']} train samples "
        f"(split {info['train_split']}), {info['val_samples']} val samples"
    )


def _dataset_error(message: str) -> Exception:
    from training.datasets import DatasetError

    return DatasetError(message)
