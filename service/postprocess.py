"""Turn the model's low-resolution heatmap into things a user can use: a map at the frame's size, boxes in
the frame's pixels, and PNG images.

The rules, in one place:
- Upsampling: bilinear (PIL, pixel-centre aligned, as cv2.INTER_LINEAR in the FNAC evaluation code) from the
  model's h x w map to the uploaded frame's H x W.
- Normalisation: min-max over the upsampled map to [0, 1]; a constant map (e.g. silence) normalises to 0.
- Boxes: 8-connected components of (normalised map >= threshold), components smaller than `min_area` (a
  fraction of the frame) dropped; each box is the component's bounding box in frame pixels, x1/y1 exclusive.
  A box's `score` is the raw cosine (upsampled heatmap x tau) at the component's best pixel, so it is in
  the same units as the response's `score`. Boxes are sorted by score, best first.
- Sounding: `score` >= the model's calibrated threshold AND the audio window's RMS level above `silence_dbfs`
  (default -60 dBFS): a window with nothing to hear has no sounding object, whatever the network says.
- PNGs: the bare heatmap is 8-bit greyscale, round(255 x normalised map), at the frame's size; the overlay
  blends a jet colormap of the normalised map (alpha 0.5) onto the frame and draws the boxes.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

OVERLAY_ALPHA = 0.5
SILENCE_DBFS = -60.0  # the usual digital-silence level (FFmpeg's silencedetect uses the same default)
LEVEL_FLOOR_DBFS = -120.0  # reported for exact zeros instead of -inf
BOX_COLOR = (255, 255, 255)


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int  # exclusive
    score: float


def audio_level_dbfs(audio: np.ndarray) -> float:
    """RMS level of a waveform in [-1, 1], in dB relative to full scale (a full-scale square wave is 0)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    return max(LEVEL_FLOOR_DBFS, 20.0 * np.log10(rms)) if rms > 0 else LEVEL_FLOOR_DBFS


def is_sounding(
    score: float, level_dbfs: float, threshold: float, silence_dbfs: float = SILENCE_DBFS
) -> bool:
    """The `sounding` decision: the network's score passes the calibrated threshold and there is audio at all."""
    return bool(score >= threshold and level_dbfs > silence_dbfs)


def upsample(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a float [h, w] map to float32 [height, width]."""
    image = Image.fromarray(np.asarray(heatmap, dtype=np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def normalize(heatmap: np.ndarray) -> np.ndarray:
    """Min-max normalisation to [0, 1]; a constant map becomes all zeros."""
    low, high = float(heatmap.min()), float(heatmap.max())
    if high - low <= 1e-12:
        return np.zeros_like(heatmap, dtype=np.float32)
    return ((heatmap - low) / (high - low)).astype(np.float32)


def find_boxes(
    normalized: np.ndarray,
    raw: np.ndarray,
    *,
    threshold: float = 0.5,
    min_area: float = 0.005,
    max_boxes: int = 10,
) -> list[Box]:
    """Boxes around the connected regions where `normalized` >= `threshold` (rules in the module docstring).

    `raw` is the map whose maximum inside each region becomes the box's score (same shape as `normalized`).
    """
    mask = normalized >= threshold
    if not mask.any():
        return []
    min_pixels = min_area * mask.size
    boxes = []
    for y0, x0, y1, x1, area, runs in _components(mask):
        if area < min_pixels:
            continue
        score = max(float(raw[row, start:end].max()) for row, start, end in runs)
        boxes.append(Box(x0, y0, x1, y1, score))
    boxes.sort(key=lambda box: box.score, reverse=True)
    return boxes[:max_boxes]


def _components(mask: np.ndarray):
    """8-connected components of a boolean mask via run-length union-find (fast on smooth, blobby masks).

    Yields (y0, x0, y1, x1, area, runs) with runs as (row, start, end) half-open.
    """
    runs: list[tuple[int, int, int]] = []
    row_runs: list[list[int]] = []  # per row, indices into `runs`
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past where it ends
    for row in range(mask.shape[0]):
        starts = np.flatnonzero(edges[row] == 1)
        ends = np.flatnonzero(edges[row] == -1)
        row_runs.append(list(range(len(runs), len(runs) + len(starts))))
        runs.extend((row, int(s), int(e)) for s, e in zip(starts, ends, strict=True))

    parent = list(range(len(runs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for row in range(1, mask.shape[0]):
        for i in row_runs[row]:
            _, s1, e1 = runs[i]
            for j in row_runs[row - 1]:
                _, s2, e2 = runs[j]
                if s1 <= e2 and s2 <= e1:  # overlap or diagonal touch (8-connectivity)
                    parent[find(i)] = find(j)

    groups: dict[int, list[tuple[int, int, int]]] = {}
    for i, run in enumerate(runs):
        groups.setdefault(find(i), []).append(run)
    for members in groups.values():
        rows = [r for r, _, _ in members]
        yield (
            min(rows),
            min(s for _, s, _ in members),
            max(rows) + 1,
            max(e for _, _, e in members),
            sum(e - s for _, s, e in members),
            members,
        )


@dataclass(frozen=True)
class Localization:
    """Post-processed result for one frame."""

    upsampled: np.ndarray  # float32 [H, W], raw units (cosine / tau)
    normalized: np.ndarray  # float32 [H, W] in [0, 1]
    boxes: list[Box]


def localize(
    heatmap: np.ndarray,
    frame_size: tuple[int, int],
    *,
    tau: float,
    threshold: float = 0.5,
    min_area: float = 0.005,
) -> Localization:
    """Upsample the model's heatmap to `frame_size` (height, width), normalise it and find boxes."""
    height, width = frame_size
    upsampled = upsample(heatmap, height, width)
    normalized = normalize(upsampled)
    boxes = find_boxes(normalized, upsampled * tau, threshold=threshold, min_area=min_area)
    return Localization(upsampled, normalized, boxes)


# ---------------------------------------------------------------------------------------------- images


def _jet(values: np.ndarray) -> np.ndarray:
    """Jet colormap: float [0, 1] -> uint8 RGB (blue -> cyan -> yellow -> red)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def heatmap_png(normalized: np.ndarray) -> bytes:
    """The bare heatmap: 8-bit greyscale PNG, round(255 x normalised value) per pixel."""
    grey = np.rint(np.clip(normalized, 0.0, 1.0) * 255.0).astype(np.uint8)
    return _png(Image.fromarray(grey, mode="L"))


def overlay_png(frame: np.ndarray, normalized: np.ndarray, boxes: list[Box]) -> bytes:
    """The frame with the colormapped heatmap blended on top and the boxes drawn, as PNG."""
    blended = (1.0 - OVERLAY_ALPHA) * frame.astype(np.float32) + OVERLAY_ALPHA * _jet(normalized)
    image = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    line = max(1, round(min(image.size) / 200))
    for box in boxes:
        draw.rectangle((box.x0, box.y0, box.x1 - 1, box.y1 - 1), outline=BOX_COLOR, width=line)
    return _png(image)


def png_base64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
