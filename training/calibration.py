"""Real (image, audio) batches from a dataset directory, for int8 calibration and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.config import FNACConfig


def dataset_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """(frame, audio) file pairs of a dataset directory in the VGG-SS layout (frames/<id>.jpg, audio/<id>.wav),
    sorted by id."""
    root = Path(root)
    frames = {p.stem: p for p in (root / "frames").glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}}
    audio = {
        p.stem: p for p in (root / "audio").glob("*") if p.suffix.lower() in {".wav", ".flac", ".mp3", ".ogg"}
    }
    ids = sorted(frames.keys() & audio.keys())
    if not ids:
        raise FileNotFoundError(f"no frames/<id>.jpg with a matching audio/<id>.wav under {root}")
    return [(frames[i], audio[i]) for i in ids]


def load_pair(frame: Path, audio: Path, config: FNACConfig) -> tuple[np.ndarray, np.ndarray]:
    """One model input exactly as the service builds it: bicubic-resized frame, centred audio window."""
    from service.media import decode_audio, decode_image, fit_audio_window, resize_image

    image = resize_image(decode_image(frame, name=frame.name), config.image_size)
    wave = decode_audio(audio, sample_rate=config.sample_rate, name=audio.name)
    return image, fit_audio_window(wave, config.n_samples)


def calibration_batches(
    root: str | Path, config: FNACConfig, n_samples: int, batch_size: int = 8, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n_samples` pairs drawn at random (seeded) from the dataset, in batches."""
    pairs = dataset_pairs(root)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(pairs), size=min(n_samples, len(pairs)), replace=False)
    samples = [load_pair(*pairs[i], config) for i in sorted(chosen)]
    return [
        (
            np.stack([s[0] for s in samples[i : i + batch_size]]),
            np.stack([s[1] for s in samples[i : i + batch_size]]),
        )
        for i in range(0, len(samples), batch_size)
    ]
