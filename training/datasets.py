"""Datasets of (frame, waveform) pairs for training and evaluation.

Three layouts are read:

- VGG-SS style directory (also what ``fnac prepare`` and ``fnac synth`` write): ``frames/<id>.jpg``,
  ``audio/<id>.wav``, optional ``splits/{train,val,test}.txt``, optional boxes in ``annotations.json`` (synth:
  every split) or ``vggss.json`` (the real VGG-SS test annotations);
- Flickr-SoundNet: ``frames/<id>.jpg``, ``audio/<id>.wav``, ``Annotations/<id>.xml`` (per-annotator boxes in
  256×256 pixels), optional ``flickr_test.csv`` / ``splits/*.txt``;
- a manifest CSV of video files (``path[,id]``, header optional), decoded with PyAV: the middle frame and the
  audio window centred on it.

Items hand the network what the service hands the ONNX graph: a uint8 image [S, S, 3] and a float32 waveform [N]
at the model's rate. Normalisation and the spectrogram run inside the model, batched. Decoding goes through
:mod:`fnac.media` so training and serving cannot drift.

A sample that fails to decode is logged with its id and returned as a :class:`DecodeFailure`; ``collate_pairs``
drops it from the batch and counts it. It is never silently replaced by another sample.
"""

from __future__ import annotations

import csv
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from model.config import FNACConfig
from training.layout import DatasetError, frames_and_audio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One clip of a dataset: either a frame + audio file pair or one video file, with optional boxes."""

    id: str
    frame: Path | None = None
    audio: Path | None = None
    video: Path | None = None
    # Ground truth, in the layout's own convention: "vggss" = normalised [x0, y0, x1, y1] boxes, union map;
    # "flickr" = per-annotator boxes in 256×256 pixels, consensus map.
    boxes: tuple[tuple[float, ...], ...] | None = None
    box_format: str | None = None


@dataclass(frozen=True)
class DecodeFailure:
    """What a dataset returns for a sample it could not decode (dropped and counted by `collate_pairs`)."""

    id: str
    reason: str


# ---------------------------------------------------------------------------------------------- layouts


def _read_split(root: Path, split: str) -> list[str] | None:
    from training.annotations import load_id_list

    path = root / "splits" / f"{split}.txt"
    return load_id_list(path) if path.is_file() else None


def _vggss_boxes(root: Path) -> dict[str, tuple[tuple[float, ...], ...]]:
    """Normalised boxes by id: synth's annotations.json (all splits) first, then vggss.json."""
    from training.annotations import load_synth_annotations, load_vggss_json

    boxes: dict[str, tuple[tuple[float, ...], ...]] = {}
    for name in ("vggss.json", "vggss_val.json"):  # real VGG-SS test file; synth also writes val boxes
        if (root / name).is_file():
            boxes.update({k: e.boxes for k, e in load_vggss_json(root / name).items()})
    synth = root / "annotations.json"
    if synth.is_file():
        for record in load_synth_annotations(synth)["samples"]:
            bbox = record["bbox"]
            if bbox and not isinstance(bbox[0], list | tuple):
                bbox = [bbox]  # a single box
            boxes[str(record["file"])] = tuple(tuple(float(np.clip(v, 0, 1)) for v in b) for b in bbox)
    return boxes


def detect_layout(source: str | Path) -> str:
    """'manifest' (a .csv file), 'flickr' (a directory with Annotations/) or 'vggss' (frames/ + audio/)."""
    source = Path(source)
    if source.is_file():
        if source.suffix.lower() in (".csv", ".txt"):
            return "manifest"
        raise DatasetError(f"{source} is a file but not a manifest CSV (path[,id] per row)")
    if not source.is_dir():
        raise DatasetError(f"dataset not found: {source}")
    if (source / "Annotations").is_dir():
        return "flickr"
    if (source / "frames").is_dir() and (source / "audio").is_dir():
        return "vggss"
    raise DatasetError(
        f"{source} has neither frames/ + audio/ (VGG-SS layout, as written by `fnac prepare` or `fnac synth`) "
        "nor Annotations/ (Flickr-SoundNet layout), and is not a manifest CSV"
    )


def _select_ids(root: Path, split: str, media_ids: set[str], annotated: set[str], test_list: set[str]):
    """Ids of a split: splits/<split>.txt when present; otherwise, for "train", every id with media that is
    not listed for val or test (never the test set by accident); for "test", the annotated or listed ids."""
    listed = _read_split(root, split)
    if listed is not None:
        return listed, f"splits/{split}.txt"
    if split == "train":
        held_out = set(test_list)
        for other in ("val", "test"):
            held_out.update(_read_split(root, other) or [])
        return sorted(media_ids - held_out), "all media ids not listed for val/test"
    if split == "test":
        if test_list:
            return sorted(test_list), "test list"
        return sorted(annotated), "annotated ids"
    return [], f"no splits/{split}.txt"


def vggss_samples(root: str | Path, split: str = "train") -> tuple[list[Sample], dict[str, Any]]:
    """Samples of a VGG-SS style directory for one split, and a description of what was used."""
    root = Path(root)
    frames, audio = frames_and_audio(root)
    media_ids = set(frames) & set(audio)
    boxes = _vggss_boxes(root)
    ids, source = _select_ids(root, split, media_ids, set(boxes), set())
    samples = [
        Sample(i, frames[i], audio[i], boxes=boxes.get(i), box_format="vggss" if i in boxes else None)
        for i in ids
        if i in media_ids
    ]
    return samples, _split_info("vggss", root, split, source, ids, samples)


def _split_info(layout: str, root: Path, split: str, source: str, ids: list, samples: list[Sample]) -> dict:
    """What a split listed and what it could use, for logs and the run's data description."""
    return {
        "layout": layout,
        "root": str(root),
        "split": split,
        "ids_from": source,
        "listed": len(ids),
        "with_media": len(samples),
        "missing_media": len(ids) - len(samples),
        "with_boxes": sum(s.boxes is not None for s in samples),
    }


def flickr_samples(
    root: str | Path, split: str = "train", test_list: str | Path | None = None
) -> tuple[list[Sample], dict[str, Any]]:
    """Samples of a Flickr-SoundNet directory. The test ids come from `test_list`, ``flickr_test.csv`` in the
    directory, ``splits/test.txt``, or else every ``Annotations/<id>.xml``."""
    from training.annotations import load_flickr_annotations, load_id_list

    root = Path(root)
    frames, audio = frames_and_audio(root)
    media_ids = set(frames) & set(audio)
    test_path = Path(test_list) if test_list else root / "flickr_test.csv"
    tests = set(load_id_list(test_path)) if test_path.is_file() else set()
    annotations = load_flickr_annotations(root / "Annotations")
    if not tests and split != "test" and _read_split(root, "test") is None:
        tests = set(annotations)  # annotated clips are the test set
    ids, source = _select_ids(root, split, media_ids, set(annotations), tests)
    samples = []
    for i in ids:
        if i in media_ids:
            boxes = annotations.get(i)
            samples.append(
                Sample(
                    i,
                    frames[i],
                    audio[i],
                    boxes=tuple(tuple(b) for b in boxes) if boxes else None,
                    box_format="flickr" if boxes else None,
                )
            )
    return samples, _split_info("flickr", root, split, source, ids, samples)


def read_manifest(path: str | Path) -> list[tuple[str, Path]]:
    """(id, video path) rows of a manifest CSV ``path[,id]``; a header row naming ``path`` is skipped; relative
    paths are relative to the CSV's folder; a missing id is the file stem."""
    path = Path(path)
    rows: list[tuple[str, Path]] = []
    with path.open(newline="") as f:
        for n, row in enumerate(csv.reader(f)):
            if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
                continue
            if n == 0 and row[0].strip().lower() == "path":
                continue
            video = Path(row[0].strip())
            video = video if video.is_absolute() else path.parent / video
            clip_id = row[1].strip() if len(row) > 1 and row[1].strip() else video.stem
            rows.append((clip_id, video))
    ids = [r[0] for r in rows]
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise DatasetError(f"{path}: ids repeat ({', '.join(repeated[:5])}); give an id column")
    return rows


def manifest_samples(path: str | Path, split: str = "train") -> tuple[list[Sample], dict[str, Any]]:
    """Every row of a manifest CSV for "train" (a manifest has no splits and no boxes: its val and test splits
    are empty, so training on a manifest never validates on its own training clips)."""
    rows = read_manifest(path) if split not in ("val", "test") else []
    samples = [Sample(i, video=v) for i, v in rows]
    info = {"layout": "manifest", "root": str(path), "split": split, "ids_from": "manifest rows"}
    info.update(listed=len(rows), with_media=len(rows), missing_media=0, with_boxes=0)
    return samples, info


def find_samples(source: str | Path, split: str = "train", **kwargs) -> tuple[list[Sample], dict[str, Any]]:
    """Samples of `source` (any supported layout) for `split`, and a description of what was used."""
    layout = detect_layout(source)
    if layout == "manifest":
        return manifest_samples(source, split)
    if layout == "flickr":
        return flickr_samples(source, split, **kwargs)
    return vggss_samples(source, split)


# ---------------------------------------------------------------------------------------------- dataset


def train_image_transform(image_size: int):
    """The reference augmentation: Resize(int(1.1·S)) bicubic (shorter side) → RandomCrop(S) → HFlip."""
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    return transforms.Compose(
        [
            transforms.Resize(int(image_size * 1.1), interpolation=InterpolationMode.BICUBIC),
            transforms.RandomCrop(image_size),
            transforms.RandomHorizontalFlip(),
        ]
    )


class PairDataset(Dataset):
    """(frame, waveform) pairs. An item is a dict ``{"id", "image" uint8 [S, S, 3], "audio" float32 [N]}``
    plus ``"gt"`` float32 [224, 224] (the protocol's ground-truth map) when the sample has boxes and
    ``with_gt`` is set; or a :class:`DecodeFailure`.

    ``train=True`` applies the reference image augmentation; otherwise the frame is resized to S×S bicubic
    exactly as the service does. ``audio_window="center"`` (the reference, default) or ``"random"`` (a random
    offset inside the clip, training only).
    """

    def __init__(
        self,
        samples: list[Sample],
        config: FNACConfig,
        *,
        train: bool = False,
        audio_window: str = "center",
        with_gt: bool = False,
        info: dict[str, Any] | None = None,
    ):
        if audio_window not in ("center", "random"):
            raise ValueError(f"audio_window must be 'center' or 'random', got {audio_window!r}")
        self.samples = samples
        self.config = config
        self.train = train
        self.audio_window = audio_window
        self.with_gt = with_gt
        self.info = dict(info or {})
        self._transform = train_image_transform(config.image_size) if train else None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def has_boxes(self) -> bool:
        return bool(self.samples) and all(s.boxes is not None for s in self.samples)

    def decode(self, index: int) -> tuple[np.ndarray, np.ndarray] | DecodeFailure:
        """(original frame, model-rate audio window) of sample `index`, or a logged DecodeFailure."""
        from fnac.media import MediaError

        sample = self.samples[index]
        try:
            return self._decode(sample)
        except (MediaError, OSError, ValueError, RuntimeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("sample %s could not be decoded: %s", sample.id, reason)
            return DecodeFailure(sample.id, reason)

    def __getitem__(self, index: int) -> dict[str, Any] | DecodeFailure:
        sample = self.samples[index]
        decoded = self.decode(index)
        if isinstance(decoded, DecodeFailure):
            return decoded
        frame, wave = decoded
        item: dict[str, Any] = {
            "id": sample.id,
            "image": torch.from_numpy(np.array(self._image(frame))),  # a writable copy
            "audio": torch.from_numpy(wave),
        }
        if self.with_gt and sample.boxes is not None:
            item["gt"] = torch.from_numpy(gt_map(sample).astype(np.float32))
        return item

    def _decode(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        from fnac.images import decode_image
        from fnac.media import decode_audio, decode_clip, fit_audio_window

        n = self.config.n_samples
        if sample.video is not None:
            clip = decode_clip(
                sample.video,
                clip_seconds=self.config.clip_seconds,
                sample_rate=self.config.sample_rate,
                name=str(sample.video),
            )
            return clip.frame, clip.audio
        frame = decode_image(sample.frame, name=str(sample.frame))
        wave = decode_audio(sample.audio, sample_rate=self.config.sample_rate, name=str(sample.audio))
        center = None
        if self.train and self.audio_window == "random" and wave.size > n:
            # torch's RNG: seeded per DataLoader worker, restored on resume.
            center = n // 2 + int(torch.randint(0, wave.size - n + 1, ()).item())
        return frame, fit_audio_window(wave, n, center=center)

    def _image(self, frame: np.ndarray) -> np.ndarray:
        from fnac.media import resize_image

        if self._transform is None:
            return resize_image(frame, self.config.image_size)
        from PIL import Image

        return np.asarray(self._transform(Image.fromarray(frame)), dtype=np.uint8)


def gt_map(sample: Sample, size: int | None = None) -> np.ndarray:
    """The protocol's ground-truth map of a sample with boxes (VGG-SS union or Flickr consensus)."""
    from training.metrics import EVAL_SIZE, flickr_gt_map, vggss_gt_map

    size = size or EVAL_SIZE
    if sample.boxes is None:
        raise DatasetError(f"sample {sample.id} has no boxes")
    if sample.box_format == "flickr":
        return flickr_gt_map(sample.boxes, size)
    return vggss_gt_map(sample.boxes, size)


def collate_pairs(items: list[dict[str, Any] | DecodeFailure]) -> dict[str, Any]:
    """Stack decoded items; failures are dropped and reported in ``"failed"`` (a list of ids).

    Returns ``{"ids", "image" [B, S, S, 3] uint8, "audio" [B, N] float32, "failed", ["gt" [B, 224, 224]]}``.
    """
    good = [item for item in items if not isinstance(item, DecodeFailure)]
    failed = [item.id for item in items if isinstance(item, DecodeFailure)]
    batch: dict[str, Any] = {"ids": [item["id"] for item in good], "failed": failed}
    if good:
        batch["image"] = torch.stack([item["image"] for item in good])
        batch["audio"] = torch.stack([item["audio"] for item in good])
        if all("gt" in item for item in good):
            batch["gt"] = torch.stack([item["gt"] for item in good])
    return batch


def open_dataset(
    source: str | Path,
    config: FNACConfig,
    split: str = "train",
    *,
    train: bool | None = None,
    audio_window: str = "center",
    with_gt: bool | None = None,
    **layout_kwargs,
) -> PairDataset:
    """A :class:`PairDataset` over `split` of `source` (directory or manifest CSV).

    Evaluation splits (``train=False``) keep only samples with both boxes and media when any sample of the
    split has boxes, and say how many they used and dropped.
    """
    samples, info = find_samples(source, split, **layout_kwargs)
    train = split == "train" if train is None else train
    if not train and any(s.boxes is not None for s in samples):
        with_boxes = [s for s in samples if s.boxes is not None]
        info["evaluated"] = len(with_boxes)
        if with_boxes:
            log.info(
                "%s split '%s': evaluating %d samples with boxes and media (of %d listed: %d without media, "
                "%d without boxes)",
                source,
                split,
                len(with_boxes),
                info["listed"],
                info["missing_media"],
                len(samples) - len(with_boxes),
            )
        samples = with_boxes
    elif info["missing_media"]:
        log.info(
            "%s split '%s': %d of %d listed ids have no media and are skipped",
            source,
            split,
            info["missing_media"],
            info["listed"],
        )
    with_gt = (not train) if with_gt is None else with_gt
    return PairDataset(samples, config, train=train, audio_window=audio_window, with_gt=with_gt, info=info)


def holdout_split(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Deterministic (train, held-out) partition, for directories that ship no validation split."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(len(samples) * fraction)) if fraction > 0 else 0
    held = set(order[:n_held])
    return [s for i, s in enumerate(samples) if i not in held], [
        s for i, s in enumerate(samples) if i in held
    ]
