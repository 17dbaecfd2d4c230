"""Decode a training set once, then augment whole batches on the training device (`fnac train --cache`).

Per-item decoding and PIL augmentation cost about 2 ms of CPU per sample; a GPU trains the small networks of
the synthetic benchmark many times faster than a few CPU workers can feed it. With ``--cache`` every training
frame is decoded and resized once (the reference's deterministic first step, Resize(int(1.1·S)) bicubic on the
shorter side, through the very same torchvision transform), every centred audio window is cut once, and each
batch is then augmented on the device: RandomCrop(S) and RandomHorizontalFlip as one gather. The distribution
of training inputs is the same as without the cache, pixel for pixel.

The decoded arrays can be kept in ``--cache-dir`` (``.npy`` files named by a fingerprint of the sample list,
file sizes and modification times, and the network's input shape), so several runs on one dataset decode it
once and share the arrays memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from model.atomic import atomic_path, atomic_write_text
from training.datasets import DecodeFailure, PairDataset

log = logging.getLogger("fnac.train")

FORMAT = "fnac-cache/1"


class _Decoded(Dataset):
    """Item i of a training PairDataset, decoded and resized but not cropped: (index, frame [H, W, 3], wave)."""

    def __init__(self, dataset: PairDataset):
        from training.datasets import train_image_transform

        self.dataset = dataset
        # The first step of the reference augmentation, the only deterministic one: the very same transform.
        self.resize = train_image_transform(dataset.config.image_size).transforms[0]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        from PIL import Image

        decoded = self.dataset.decode(index)  # failures are logged there, as in the DataLoader path
        if isinstance(decoded, DecodeFailure):
            return index, decoded
        frame, wave = decoded
        return index, (np.asarray(self.resize(Image.fromarray(frame)), dtype=np.uint8), wave)


def fingerprint(dataset: PairDataset) -> str:
    """Names the decoded arrays: the samples (ids, files, sizes, mtimes) and the input shape they were cut to."""
    digest = hashlib.sha256()
    config = dataset.config
    digest.update(json.dumps([FORMAT, config.image_size, config.sample_rate, config.n_samples]).encode())
    for sample in dataset.samples:
        parts = [sample.id]
        for path in (sample.frame, sample.audio, sample.video):
            if path is not None:
                stat = os.stat(path)
                parts += [str(path), stat.st_size, stat.st_mtime_ns]
        digest.update(json.dumps(parts).encode())
    return digest.hexdigest()[:16]


def decode_all(dataset: PairDataset, workers: int = 4, progress: bool = True) -> dict[str, Any]:
    """Decode every sample of `dataset` once: frames padded into one uint8 array with their true sizes."""
    from tqdm import tqdm

    if dataset.audio_window != "center":
        raise ValueError(
            "the decode cache keeps one centred audio window per sample; it cannot serve --audio-window random"
        )
    n = len(dataset)
    frames: list[np.ndarray | None] = [None] * n
    waves: list[np.ndarray | None] = [None] * n
    failed: list[str] = []
    loader = DataLoader(
        _Decoded(dataset),
        batch_size=None,
        num_workers=workers,
        collate_fn=lambda item: item,
        prefetch_factor=8 if workers else None,
        generator=torch.Generator().manual_seed(0),  # leave the global RNG (training's) untouched,
    )
    for index, item in tqdm(
        loader, total=n, desc="decode cache", unit="sample", disable=not progress, mininterval=2
    ):
        if isinstance(item, DecodeFailure):
            failed.append(item.id)
            continue
        frames[index], waves[index] = item
    keep = [i for i in range(n) if frames[i] is not None]
    if not keep:
        raise ValueError("no training sample could be decoded")
    sizes = np.array([frames[i].shape[:2] for i in keep], dtype=np.int64)
    height, width = sizes.max(axis=0)
    images = np.zeros((len(keep), height, width, 3), dtype=np.uint8)
    for row, i in enumerate(keep):
        h, w = frames[i].shape[:2]
        images[row, :h, :w] = frames[i]
    return {
        "images": images,
        "sizes": sizes,
        "audio": np.stack([waves[i] for i in keep]).astype(np.float32, copy=False),
        "ids": [dataset.samples[i].id for i in keep],
        "failed": failed,
    }


def load_or_build(
    dataset: PairDataset, cache_dir: str | Path | None, workers: int = 4, progress: bool = True
) -> dict[str, Any]:
    """The decoded arrays of `dataset`: read (memory-mapped) from `cache_dir` when they are there, else decoded
    now and, with a `cache_dir`, written there atomically for the next run."""
    if cache_dir is None:
        return decode_all(dataset, workers, progress)
    folder = Path(cache_dir) / f"train-{fingerprint(dataset)}"
    index_path = folder / "index.json"
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        log.info("decode cache: reading %s (%d samples)", folder, len(index["ids"]))
        return {
            "images": np.load(folder / "images.npy", mmap_mode="r"),
            "sizes": np.load(folder / "sizes.npy"),
            "audio": np.load(folder / "audio.npy", mmap_mode="r"),
            "ids": index["ids"],
            "failed": index["failed"],
        }
    arrays = decode_all(dataset, workers, progress)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("images", "sizes", "audio"):
        with atomic_path(folder / f"{name}.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, arrays[name])
    # index.json last: its presence means the arrays beside it are complete.
    atomic_write_text(
        index_path, json.dumps({"format": FORMAT, "ids": arrays["ids"], "failed": arrays["failed"]})
    )
    log.info("decode cache: wrote %s", folder)
    return arrays


def crop_and_flip(
    images: torch.Tensor, sizes: torch.Tensor, size: int, generator: torch.Generator
) -> torch.Tensor:
    """RandomCrop(size) then RandomHorizontalFlip(0.5) of each image, as one gather on the images' device.

    `images` uint8 [B, H, W, 3] (each padded at the bottom/right), `sizes` [B, 2] their true (h, w) → [B, S, S, 3].
    """
    batch, device = images.shape[0], images.device
    u = torch.rand(batch, 3, generator=generator, device=device)
    # torchvision's RandomCrop draws top in [0, h - S] and left in [0, w - S], uniformly
    top = (u[:, 0] * (sizes[:, 0] - size + 1)).long().clamp_(max=(sizes[:, 0] - size))
    left = (u[:, 1] * (sizes[:, 1] - size + 1)).long().clamp_(max=(sizes[:, 1] - size))
    flip = u[:, 2] < 0.5
    steps = torch.arange(size, device=device)
    rows = top[:, None] + steps  # [B, S]
    cols = torch.where(flip[:, None], left[:, None] + size - 1 - steps, left[:, None] + steps)
    return images[torch.arange(batch, device=device)[:, None, None], rows[:, :, None], cols[:, None, :]]


class CachedLoader:
    """Batches of the decoded training set, cropped and flipped on `device`, in the order of a
    DistributedSampler (the shuffle depends only on (seed, epoch), across ranks and resumes, like the
    DataLoader path).

    Yields the same dicts as `collate_pairs`: ``{"ids", "image" [B, S, S, 3] uint8, "audio" [B, N], "failed"}``.
    """

    def __init__(
        self,
        arrays: dict[str, Any],
        image_size: int,
        batch_size: int,
        *,
        dist,
        seed: int,
        prefetch: int = 2,
        sampler=None,
    ):
        self.image_size = image_size
        self.prefetch = prefetch
        self.batch_size = batch_size
        self.device = dist.device
        self.seed = seed
        self.rank = dist.rank
        small = min(int(arrays["sizes"][:, 0].min()), int(arrays["sizes"][:, 1].min()))
        if small < image_size:
            raise ValueError(f"a cached frame is {small} px on a side, smaller than the {image_size} px crop")
        # The arrays stay in host memory (memory-mapped from --cache-dir: several runs share one copy in the
        # page cache); each batch is gathered there (up to `prefetch` batches ahead, in a background thread,
        # pinned for a GPU), copied over and cropped on the device.
        self.images = arrays["images"]
        self.sizes = torch.from_numpy(np.asarray(arrays["sizes"]))
        self.audio = arrays["audio"]
        self.ids = list(arrays["ids"])
        # Samples that failed to decode are reported with the first epoch, as the DataLoader path reports them.
        self.pending_failures = list(arrays["failed"])
        # `sampler`: another order of the rows with set_epoch (e.g. training.sampler.ClassBatchSampler)
        self.sampler = sampler or DistributedSampler(
            range(len(self.ids)),
            num_replicas=dist.world_size,
            rank=dist.rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def _host_batches(self, order: list[int]) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """(rows, images, audio) of each step, gathered in host memory; pinned when the device is a GPU, so the
        copy over can overlap the device's work."""
        pin = self.device.type == "cuda"
        for step in range(len(self)):
            chosen = order[step * self.batch_size : (step + 1) * self.batch_size]
            rows = np.sort(np.asarray(chosen))  # ascending reads from a memory map
            images = torch.from_numpy(self.images[rows])
            audio = torch.from_numpy(self.audio[rows])
            if pin:
                images, audio = images.pin_memory(), audio.pin_memory()
            yield rows, images, audio

    def __iter__(self):
        order = list(self.sampler)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed * 1_000_003 + self.sampler.epoch * 7919 + self.rank)
        # The crops draw from `generator` here, in step order, so the batches do not depend on the prefetching.
        for rows, images, audio in prefetched(self._host_batches(order), self.prefetch):
            failed, self.pending_failures = self.pending_failures, []
            images = images.to(self.device, non_blocking=True)
            sizes = self.sizes[rows].to(self.device)
            yield {
                "ids": [self.ids[i] for i in rows],
                "image": crop_and_flip(images, sizes, self.image_size, generator),
                "audio": audio.to(self.device, non_blocking=True),
                "failed": failed,
            }


T = TypeVar("T")


def prefetched(items: Iterator[T], depth: int) -> Iterator[T]:
    """The items of `items`, produced up to `depth` ahead by a background thread (numpy's gathers and torch's
    pinning release the GIL, so the next batch is read while the training step runs). An exception in the
    producer is raised here, at the item where it happened; closing this generator early stops the thread.
    `depth` 0: no thread, the items as they come."""
    if depth <= 0:
        yield from items
        return
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(message: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                buffer.put(message, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("done", None))
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))

    thread = threading.Thread(target=produce, name="fnac-cache-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = buffer.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()
