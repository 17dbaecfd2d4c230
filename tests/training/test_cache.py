"""`fnac train --cache`: decode once, crop and flip batches on the device — same augmentation as the PIL path."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import FNACConfig
from training.cache import CachedLoader, crop_and_flip, decode_all, fingerprint, load_or_build, prefetched
from training.datasets import open_dataset
from training.distributed import DistInfo
from training.train import train
from training.train_options import TrainOptions

CONFIG = FNACConfig(width=8, dim=32, image_size=64, clip_seconds=1.0)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    from training.synth import make_synth

    root = tmp_path_factory.mktemp("synth")
    make_synth(root, n_classes=4, n_train=24, n_val=8, n_test=4, image_size=96, clip_seconds=1.0,
               distractors=(0, 1), negatives=False)  # fmt: skip
    return root


def _one_process() -> DistInfo:
    return DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_crop_and_flip_takes_the_drawn_window_of_each_image():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (5, 20, 30, 3), dtype=np.uint8))
    # true sizes differ per image (padding beyond them must never be read)
    sizes = torch.tensor([[20, 30], [12, 12], [20, 14], [15, 30], [12, 25]])
    out = crop_and_flip(images, sizes, 12, torch.Generator().manual_seed(3))
    draws = torch.rand(5, 3, generator=torch.Generator().manual_seed(3))  # the same draws, replayed
    assert out.shape == (5, 12, 12, 3) and out.dtype == torch.uint8
    for n in range(5):
        h, w = int(sizes[n, 0]), int(sizes[n, 1])
        top, left = int(draws[n, 0] * (h - 11)), int(draws[n, 1] * (w - 11))
        expected = images[n, top : top + 12, left : left + 12].numpy()
        if draws[n, 2] < 0.5:
            expected = expected[:, ::-1]
        np.testing.assert_array_equal(out[n].numpy(), expected)


def test_crop_positions_cover_every_offset_and_flip_half_the_time():
    h, w, size, trials = 9, 7, 5, 4000
    images = torch.zeros(trials, h, w, 3, dtype=torch.uint8)
    images[..., 0] = torch.arange(h)[:, None]  # channel 0 = row index, channel 1 = column index
    images[..., 1] = torch.arange(w)[None, :]
    out = crop_and_flip(images, torch.tensor([[h, w]] * trials), size, torch.Generator().manual_seed(0))
    tops = out[:, 0, 0, 0].long()
    first, last = out[:, 0, 0, 1].long(), out[:, 0, -1, 1].long()
    flipped = first > last
    lefts = torch.where(flipped, last, first)
    # uniform over all h - size + 1 tops and w - size + 1 lefts, as torchvision's RandomCrop
    assert sorted(set(tops.tolist())) == list(range(h - size + 1))
    assert sorted(set(lefts.tolist())) == list(range(w - size + 1))
    assert abs(flipped.float().mean().item() - 0.5) < 0.05
    counts = torch.bincount(tops, minlength=h - size + 1).float() / trials
    assert counts.min() > 0.8 / (h - size + 1)


def test_decoded_frames_and_audio_are_the_uncached_pipelines_first_step(synth_dir):
    from PIL import Image

    from training.datasets import train_image_transform

    dataset = open_dataset(synth_dir, CONFIG, "train", train=True)
    arrays = decode_all(dataset, workers=0, progress=False)
    resize = train_image_transform(CONFIG.image_size).transforms[0]
    assert arrays["ids"] == [s.id for s in dataset.samples] and arrays["failed"] == []
    assert arrays["images"].shape == (24, 70, 70, 3) and arrays["audio"].shape == (24, CONFIG.n_samples)
    for row in (0, 7, 23):
        frame, wave = dataset._decode(dataset.samples[row])
        np.testing.assert_array_equal(arrays["images"][row], np.asarray(resize(Image.fromarray(frame))))
        np.testing.assert_array_equal(arrays["audio"][row], wave)


def test_cache_dir_is_written_once_and_read_back_memory_mapped(synth_dir, tmp_path):
    dataset = open_dataset(synth_dir, CONFIG, "train", train=True)
    built = load_or_build(dataset, tmp_path, workers=0, progress=False)
    (folder,) = list(tmp_path.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == ["audio.npy", "images.npy", "index.json", "sizes.npy"]
    read = load_or_build(dataset, tmp_path, workers=0, progress=False)
    assert isinstance(read["images"], np.memmap)
    for key in ("images", "sizes", "audio"):
        np.testing.assert_array_equal(np.asarray(read[key]), built[key])
    # another input shape, or a changed file, is another cache
    assert fingerprint(
        open_dataset(synth_dir, FNACConfig(width=8, dim=32, image_size=48), "train", train=True)
    ) != (fingerprint(dataset))
    wav = dataset.samples[0].audio
    stat = os.stat(wav)
    os.utime(wav, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fingerprint(dataset) != folder.name.removeprefix("train-")


def test_cached_loader_visits_each_sample_once_per_epoch_in_the_sampler_order(synth_dir):
    dataset = open_dataset(synth_dir, CONFIG, "train", train=True)
    arrays = decode_all(dataset, workers=0, progress=False)
    loader = CachedLoader(arrays, CONFIG.image_size, 8, dist=_one_process(), seed=5)
    loader.sampler.set_epoch(2)
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    ids = [i for b in batches for i in b["ids"]]
    assert sorted(ids) == sorted(arrays["ids"])
    assert all(
        b["image"].shape == (8, 64, 64, 3) and b["audio"].shape == (8, CONFIG.n_samples) for b in batches
    )
    # same epoch ⇒ same batches (resume); next epoch ⇒ another order
    loader.sampler.set_epoch(2)
    again = list(loader)
    assert [b["ids"] for b in again] == [b["ids"] for b in batches]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(again, batches, strict=True))
    loader.sampler.set_epoch(3)
    assert [b["ids"] for b in loader] != [b["ids"] for b in batches]


def test_training_with_a_cache_dir_gives_the_same_run_whether_built_or_read(synth_dir, tmp_path):
    from model.checkpoint import read_checkpoint

    options = dict(epochs=2, batch_size=8, warmup_epochs=1, lr=1e-3, workers=0, progress=False, cache=True)
    first = train(CONFIG, synth_dir, tmp_path / "a", TrainOptions(**options, cache_dir=str(tmp_path / "c")))
    second = train(CONFIG, synth_dir, tmp_path / "b", TrainOptions(**options, cache_dir=str(tmp_path / "c")))
    assert first["final"]["train_loss"] == second["final"]["train_loss"]
    a, b = (read_checkpoint(Path(tmp_path / run / "last.pt"))["model"] for run in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first["final"]["steps"] == 3 and first["final"]["failed_samples"] == 0


def test_random_audio_window_is_refused_with_the_cache(synth_dir):
    dataset = open_dataset(synth_dir, CONFIG, "train", train=True, audio_window="random")
    with pytest.raises(ValueError, match="random"):
        decode_all(dataset, workers=0, progress=False)


def test_prefetching_does_not_change_the_batches(synth_dir):
    dataset = open_dataset(synth_dir, CONFIG, "train", train=True)
    arrays = decode_all(dataset, workers=0, progress=False)
    runs = []
    for depth in (0, 2):
        loader = CachedLoader(arrays, CONFIG.image_size, 8, dist=_one_process(), seed=5, prefetch=depth)
        loader.sampler.set_epoch(1)
        runs.append(list(loader))
    plain, ahead = runs
    assert [b["ids"] for b in plain] == [b["ids"] for b in ahead]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(plain, ahead, strict=True))
    assert all(torch.equal(a["audio"], b["audio"]) for a, b in zip(plain, ahead, strict=True))


def test_prefetched_passes_items_and_errors_through_and_stops_its_thread_when_closed():
    def threads() -> int:
        return sum(t.name == "fnac-cache-prefetch" for t in threading.enumerate())

    assert list(prefetched(iter(range(10)), 2)) == list(range(10))

    def failing():
        yield 1
        raise RuntimeError("bad gather")

    items = prefetched(failing(), 2)
    assert next(items) == 1
    with pytest.raises(RuntimeError, match="bad gather"):
        next(items)
    assert threads() == 0

    items = prefetched(iter(range(1000)), 2)
    assert next(items) == 0 and threads() == 1  # the producer is blocked on the full buffer
    items.close()
    assert threads() == 0
