"""The dataset-directory layout (``frames/<id>.<image>``, ``audio/<id>.<audio>``) and loading one model input
from it exactly as the service does. Torch-free: `fnac score` and `fnac eval` on ONNX models use it where
torch is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fnac.errors import FnacError


class DatasetError(FnacError, ValueError):
    """A dataset directory or manifest that cannot be used, with the reason."""


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac")
# What a folder scan (`fnac prepare DIR`, `fnac score DIR`) takes for a video: the usual extensions of the video
# containers FFmpeg reads. The service tries whatever it is sent, and so does a file named on the command line;
# a folder holds other files too, so a scan goes by extension and names what it leaves out (`scan_videos`).
VIDEO_SUFFIXES = (
    ".3g2", ".3gp", ".asf", ".avi", ".dv", ".f4v", ".flv", ".m2t", ".m2ts", ".m4v", ".mkv", ".mov", ".mp4",
    ".mpeg", ".mpg", ".mts", ".mxf", ".nut", ".ogv", ".qt", ".ts", ".vob", ".webm", ".wmv", ".y4m",
)  # fmt: skip


def scan_videos(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """(videos, skipped) among the visible files below `folder`, recursively, both sorted: a file is a video
    by its extension (VIDEO_SUFFIXES, any case); every other visible file is skipped."""
    videos, skipped = [], []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            (videos if path.suffix.lower() in VIDEO_SUFFIXES else skipped).append(path)
    return videos, skipped


def files_by_stem(folder: str | Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """{stem: path} of the visible files in `folder` with one of `suffixes` (first by name on a clash);
    empty when the folder does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in suffixes and path.is_file() and not path.name.startswith("."):
            found.setdefault(path.stem, path)
    return found


def frames_and_audio(root: str | Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """({id: frame}, {id: audio}) of a dataset directory."""
    root = Path(root)
    return files_by_stem(root / "frames", IMAGE_SUFFIXES), files_by_stem(root / "audio", AUDIO_SUFFIXES)


def dataset_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """(frame, audio) file pairs present under both frames/ and audio/, sorted by id."""
    frames, audio = frames_and_audio(root)
    ids = sorted(frames.keys() & audio.keys())
    if not ids:
        raise DatasetError(f"no frames/<id>.jpg with a matching audio/<id>.wav under {root}")
    return [(frames[i], audio[i]) for i in ids]


def load_pair(frame: Path, audio: Path, config) -> tuple[np.ndarray, np.ndarray]:
    """One model input exactly as the service builds it: bicubic-resized frame, centred audio window.
    `config` needs `image_size`, `sample_rate` and `n_samples` (an FNACConfig or the ONNX metadata)."""
    from fnac.images import decode_image
    from fnac.media import decode_audio, fit_audio_window, resize_image

    image = resize_image(decode_image(frame, name=frame.name), config.image_size)
    wave = decode_audio(audio, sample_rate=config.sample_rate, name=audio.name)
    return image, fit_audio_window(wave, config.n_samples)


def calibration_batches(
    root: str | Path, config, n_samples: int, batch_size: int = 8, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n_samples` pairs drawn at random (seeded) from the dataset, in batches (int8 calibration)."""
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
