"""Training throughput: our pipeline vs an official-style one, same network, batch, data and threads.

- ours cached (`fnac train --cache`): the training set decoded once, each batch cropped/flipped as one gather;
- ours: the Dataset returns a uint8 frame (PIL augmentation) and the raw waveform; the log spectrogram and
  the spectrogram masks run inside the model, batched (``training.train_forward.TrainForward``);
- official-style (EZ-VSL / FNAC ``datasets.py``): the Dataset decodes audio with PyAV, cuts the centred window,
  computes ``scipy.signal.spectrogram`` + log per item, ToTensor/Normalize for image and spectrogram, applies
  the frequency/time masks per item, and hands float tensors to the network.

Both run the full training step (forward, FNAC loss, backward, Adam) over DataLoaders with the same workers.
The pipelines alternate in rounds (background load hits both alike) and the median round of each is
reported with the ratio; the data pipelines alone (loader + our batched spectrogram) are timed the same way.

On a GPU (``--device cuda``, the default when one is visible) the network, the spectrogram front end and the
cached crops run there, under the same autocast as ``fnac train`` (``--amp``), for both pipelines alike; the
loaders' workers stay on the CPU, with pinned memory. The clock is read only after the device has finished.

    python -m benchmarks.bench_train [--width 16] [--image-size 224] [--batch-size 32] [--steps 8]
    python -m benchmarks.bench_train --device cuda --width 64 --dim 512 --batch-size 128 --steps 24
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


class OfficialStyleDataset(torch.utils.data.Dataset):
    """Per-item preprocessing as in the research code (PIL transforms, scipy spectrogram in __getitem__)."""

    def __init__(self, pairs, config, freq_mask: int = 10, time_mask: int = 10):
        from PIL import Image
        from torchvision import transforms

        self.pairs = pairs
        self.config = config
        self.freq_mask, self.time_mask = freq_mask, time_mask
        size = config.image_size
        self.image_transform = transforms.Compose(
            [
                transforms.Resize(int(size * 1.1), Image.BICUBIC),
                transforms.RandomCrop((size, size)),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            ]
        )
        self.audio_transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(mean=[0.0], std=[12.0])]
        )

    def __len__(self):
        return len(self.pairs)

    def _load_audio(self, path: Path) -> tuple[np.ndarray, int]:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            rate = stream.rate
            chunks = [frame.to_ndarray() for frame in container.decode(stream)]
        audio = np.concatenate(chunks, axis=1).astype(np.float32)
        if audio.dtype.kind == "i" or np.abs(audio).max() > 1.5:  # s16 planes
            audio = audio / 32768.0
        return audio.mean(axis=0), rate

    def __getitem__(self, index):
        import scipy.signal
        from PIL import Image

        frame, audio_path = self.pairs[index]
        image = self.image_transform(Image.open(frame).convert("RGB"))
        samples, rate = self._load_audio(audio_path)
        n = int(rate * self.config.clip_seconds)
        centre = samples.shape[0] // 2
        samples = samples[max(0, centre - n // 2) : max(0, centre - n // 2) + n]
        if samples.shape[0] < n:
            samples = np.tile(samples, n // max(1, samples.shape[0]) + 1)[:n]
        samples = np.clip(samples, -1.0, 1.0)
        _, _, spectrogram = scipy.signal.spectrogram(samples, rate, nperseg=512, noverlap=274)
        spectrogram = self.audio_transform(np.log(spectrogram + 1e-7))  # [1, F, T]
        # one frequency mask and one time mask of random width < 10, per item
        width = np.random.randint(0, self.freq_mask)
        start = np.random.randint(0, spectrogram.shape[1] - width + 1)
        spectrogram[:, start : start + width] = 0
        width = np.random.randint(0, self.time_mask)
        start = np.random.randint(0, spectrogram.shape[2] - width + 1)
        spectrogram[:, :, start : start + width] = 0
        return image, spectrogram.float()


def _official_forward(fnac, image, spec):
    v = fnac.imgnet(image)
    v = F.normalize(fnac.img_proj(fnac.img_dropout(v)), dim=1)
    return v, fnac.encode_spectrogram(spec)


def _time_pipeline(name, loader, step, steps: int, warmup: int, sync=lambda: None) -> dict:
    iterator = iter(loader)
    for _ in range(warmup):
        step(next(iterator))
    sync()  # device work is asynchronous: the clock starts and stops with the device idle
    start = time.perf_counter()
    samples = 0
    for _ in range(steps):
        samples += step(next(iterator))
    sync()
    seconds = time.perf_counter() - start
    return {"pipeline": name, "samples": samples, "seconds": seconds, "samples_per_s": samples / seconds}


def _make_data(root: Path, n: int, image_size: int, audio_seconds: float, workers: int) -> None:
    from training.synth import make_synth

    make_synth(root, n_classes=6, n_train=n, n_val=0, n_test=0, image_size=image_size,
               clip_seconds=audio_seconds, distractors=(0, 2), negatives=False, workers=workers)  # fmt: skip


def _device(name: str) -> torch.device:
    from training.distributed import DeviceError, resolve_device

    try:
        return torch.device(resolve_device(name))
    except DeviceError as exc:
        raise SystemExit(f"error: {exc}") from None


def run_benchmark(args: argparse.Namespace) -> dict:
    from model.config import FNACConfig
    from model.fnac import FNAC
    from model.losses import fnac_loss
    from training.cache import CachedLoader, decode_all
    from training.datasets import collate_pairs, open_dataset
    from training.distributed import DistInfo
    from training.layout import dataset_pairs
    from training.train_forward import SpecAugment, TrainForward, autocast, resolve_amp_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    amp_dtype = resolve_amp_dtype(args.amp, device)
    on_gpu = device.type == "cuda"
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    config = FNACConfig(width=args.width, dim=args.dim, image_size=args.image_size)
    per_round = args.batch_size * (args.steps + args.warmup)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "data"
        if not args.data:
            _make_data(data, per_round, args.frame_size, args.audio_seconds, max(1, args.workers))
        torch.manual_seed(0)
        fnac = FNAC(config).to(device).train()
        forward = TrainForward(fnac, SpecAugment().to(device), amp_dtype).train()
        optimizer = torch.optim.Adam(fnac.parameters(), lr=1e-4, weight_decay=1e-4)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

        def update(v, a) -> None:
            loss, _ = fnac_loss(v, a, fnac.tau, epoch=10)  # the full FNAC objective
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        def to_device(x: torch.Tensor) -> torch.Tensor:
            return x.to(device, non_blocking=True)

        def ours_step(batch) -> int:
            update(*forward(to_device(batch["image"]), to_device(batch["audio"])))
            return len(batch["ids"])

        def official_step(batch) -> int:
            image, spec = batch
            with autocast(device, amp_dtype):  # the same autocast as `fnac train` uses for the encoders
                v, a = _official_forward(fnac, to_device(image), to_device(spec))
            update(v.float(), a.float())
            return image.shape[0]

        def ours_loader_only(batch) -> int:  # the data pipeline alone, incl. our in-model spectrogram
            with torch.no_grad():
                forward.spec_augment(fnac.spectrogram(to_device(batch["audio"]).float()))
            return len(batch["ids"])

        ours_set = open_dataset(data, config, "train")
        cache_start = time.perf_counter()
        cached = decode_all(ours_set, workers=args.workers, progress=False)  # `fnac train --cache`
        cache_seconds = time.perf_counter() - cache_start
        one_process = DistInfo(device=device)
        official_set = OfficialStyleDataset(dataset_pairs(data), config)
        loader_args = {"batch_size": args.batch_size, "shuffle": True, "drop_last": True}
        loader_args.update(num_workers=args.workers, persistent_workers=False, pin_memory=on_gpu)

        def ours_loader():
            return torch.utils.data.DataLoader(ours_set, collate_fn=collate_pairs, **loader_args)

        def cached_loader():
            return CachedLoader(cached, config.image_size, args.batch_size, dist=one_process, seed=0)

        def official_loader():
            return torch.utils.data.DataLoader(official_set, **loader_args)

        # Warm the kernels of both paths on fixed batches first (first calls allocate and pick algorithms).
        ours_batch = collate_pairs([ours_set[i] for i in range(args.batch_size)])
        official_batch = torch.utils.data.default_collate([official_set[i] for i in range(args.batch_size)])
        for _ in range(2):
            ours_step(ours_batch)
            official_step(official_batch)
        sync()
        results: dict[str, list[dict]] = {
            k: [] for k in ("ours", "ours cached", "official-style", "ours loader", "official loader")
        }
        for _ in range(args.rounds):  # alternate, so background load hits both alike
            results["ours"].append(
                _time_pipeline("ours", ours_loader(), ours_step, args.steps, args.warmup, sync)
            )
            results["ours cached"].append(
                _time_pipeline("ours cached", cached_loader(), ours_step, args.steps, args.warmup, sync)
            )
            results["official-style"].append(
                _time_pipeline(
                    "official-style", official_loader(), official_step, args.steps, args.warmup, sync
                )
            )
            results["ours loader"].append(
                _time_pipeline("ours loader", ours_loader(), ours_loader_only, args.steps, args.warmup, sync)
            )
            results["official loader"].append(
                _time_pipeline(
                    "official loader",
                    official_loader(),
                    lambda b: b[0].shape[0],
                    args.steps,
                    args.warmup,
                    sync,
                )
            )
    best = {k: float(np.median([r["samples_per_s"] for r in v])) for k, v in results.items()}
    return {
        "config": {
            "width": args.width,
            "dim": args.dim,
            "image_size": args.image_size,
            "frame_size": args.frame_size,
            "audio_seconds_stored": args.audio_seconds,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "threads": torch.get_num_threads(),
            "steps": args.steps,
            "rounds": args.rounds,
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if on_gpu else None,
            "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
        },
        "rounds": results,
        "samples_per_s": best,
        "ratio": best["ours"] / best["official-style"],
        "cached_ratio": best["ours cached"] / best["official-style"],
        "paired_cached_ratio": _paired(results["ours cached"], results["official-style"]),
        "cache_build_seconds": cache_seconds,
        "loader_ratio": best["ours loader"] / best["official loader"],
        # rounds run back to back, so a paired ratio cancels slow drifts in background load
        "paired_ratio": _paired(results["ours"], results["official-style"]),
        "paired_loader_ratio": _paired(results["ours loader"], results["official loader"]),
    }


def _paired(ours: list[dict], official: list[dict]) -> float:
    return float(
        np.median([a["samples_per_s"] / b["samples_per_s"] for a, b in zip(ours, official, strict=True)])
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--width", type=int, default=16, help="ResNet-18 base width (64 = paper; default 16)")
    p.add_argument("--dim", type=int, default=128, help="embedding dimension (default 128)")
    p.add_argument("--image-size", type=int, default=224, help="network input side (default 224)")
    p.add_argument("--frame-size", type=int, default=256, help="stored frame side of the generated data")
    p.add_argument("--audio-seconds", type=float, default=10.0, help="stored audio per clip (VGGSound: 10 s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median of each is reported")
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers (both pipelines)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = default)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the network runs (default: cuda when visible)")  # fmt: skip
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto",
                   help="autocast on GPU, as `fnac train --amp` (default auto; CPU always fp32)")  # fmt: skip
    p.add_argument("--data", help="existing dataset directory (default: generate a synthetic one)")
    p.add_argument("--json", help="also write the results as JSON to this file")
    return p


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    if not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(args)
    else:  # called from `fnac bench`: fill in what that parser does not define
        defaults = vars(build_parser().parse_args([]))
        args = argparse.Namespace(
            **{**defaults, **{k: v for k, v in vars(args).items() if k in defaults and v}}
        )
    result = run_benchmark(args)
    c = result["config"]
    print(
        f"training throughput, width {c['width']}, {c['image_size']} px, batch {c['batch_size']}, "
        f"{c['workers']} loader workers, {c['threads']} threads, {c['gpu'] or c['device']}, autocast {c['amp']}"
    )
    for name, value in result["samples_per_s"].items():
        rounds = ", ".join(f"{r['samples_per_s']:.1f}" for r in result["rounds"][name])
        print(f"  {name:<16} {value:8.1f} samples/s   (rounds: {rounds})")
    print(
        f"  training step, ratio ours / official-style: {result['ratio']:.2f}x "
        f"(median of per-round ratios {result['paired_ratio']:.2f}x)"
    )
    print(
        f"  training step with --cache (decoded once in {result['cache_build_seconds']:.1f} s), ratio ours cached / "
        f"official-style: {result['cached_ratio']:.2f}x (median of per-round ratios {result['paired_cached_ratio']:.2f}x)"
    )
    print(
        f"  data pipeline alone, ratio ours / official-style: {result['loader_ratio']:.2f}x "
        f"(median of per-round ratios {result['paired_loader_ratio']:.2f}x)"
    )
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
