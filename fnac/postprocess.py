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
- The bare-map PNG: 8-bit greyscale, round(255 x normalised map) (`quantize`), at the frame's size. Overlays
  (the map coloured and blended onto the frame, PNG or video) are drawn by `fnac.render`.
- Object-guided localization (OGL; models exported with an object branch, metadata `ogl_alpha`): the
  objectness map is upsampled the same way and fused with the audio-visual map by the official FNAC formula,
  normalise(alpha x normalise(AV) + (1 - alpha) x normalise(OBJ)). Boxes and images then come from the fused
  map; box scores stay raw audio-visual cosines, and `sounding` stays the audio-visual score's decision.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fnac import contract

SILENCE_DBFS = contract.SILENCE_DBFS
LEVEL_FLOOR_DBFS = -120.0  # reported for exact zeros instead of -inf


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


def fuse_objectness(av: np.ndarray, objectness: np.ndarray, alpha: float) -> np.ndarray:
    """Object-guided localization, as the official FNAC test.py computes it: normalise(alpha x normalise(AV) +
    (1 - alpha) x normalise(OBJ)) of two maps of one size (already upsampled), float32 in [0, 1]."""
    if av.shape != objectness.shape:
        raise ValueError(f"audio-visual map {av.shape} and objectness map {objectness.shape} differ in shape")
    return normalize(alpha * normalize(av) + (1.0 - alpha) * normalize(objectness))


def find_boxes(
    normalized: np.ndarray,
    raw: np.ndarray,
    *,
    threshold: float = contract.BOX_THRESHOLD,
    min_area: float = contract.BOX_MIN_AREA,
    max_boxes: int = 10,
    score_scale: float = 1.0,
) -> list[Box]:
    """Boxes around the connected regions where `normalized` >= `threshold` (rules in the module docstring).

    `raw` is the map whose maximum inside each region, times `score_scale` (> 0), becomes the box's score
    (same shape as `normalized`).
    """
    mask = normalized >= threshold
    if not mask.any():
        return []
    boxes = [
        Box(int(x0), int(y0), int(x1), int(y1), float(score) * score_scale)
        for y0, x0, y1, x1, area, score in _components(mask, raw)
        if area >= min_area * mask.size
    ]
    boxes.sort(key=lambda box: box.score, reverse=True)
    return boxes[:max_boxes]


def _components(mask: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """8-connected components of a boolean [H, W] mask, all in numpy (a frame-sized map costs well under a
    millisecond): horizontal runs, links between runs of adjacent rows that overlap or touch diagonally,
    labels by a vectorised union-find.

    Returns one row per component: y0, x0, y1, x1 (exclusive), pixel count, and the maximum of `raw` over it.
    """
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past where it ends
    # Row-major, so each row alternates start, end, start, ... (flatnonzero of a boolean array is many
    # times faster than nonzero of the 2-D int8 one.)
    edge_rows, edge_cols = np.divmod(np.flatnonzero(edges.reshape(-1) != 0), width + 1)
    rows, starts, ends = edge_rows[0::2], edge_cols[0::2], edge_cols[1::2]
    n = rows.size

    # Run i (row r) touches run j of row r-1 iff starts[i] <= ends[j] and starts[j] <= ends[i]. Runs of a row
    # are sorted and disjoint, so those j form one contiguous range [lo, hi), found by binary search on keys
    # that order runs by (row, column).
    stride = width + 2
    lo = np.searchsorted(rows * stride + ends, (rows - 1) * stride + starts, side="left")
    hi = np.searchsorted(rows * stride + starts, (rows - 1) * stride + ends, side="right")
    counts = np.maximum(hi - lo, 0)
    left = np.repeat(np.arange(n), counts)
    right = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())

    # Union-find, vectorised: hook the larger of the two roots of every link onto the smaller, then compress
    # every path completely; a few rounds suffice even for long chains of runs.
    parent = np.arange(n)
    while True:
        a, b = parent[left], parent[right]
        if np.array_equal(a, b):
            break
        np.minimum.at(parent, np.maximum(a, b), np.minimum(a, b))
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped

    roots, component = np.unique(parent, return_inverse=True)
    # The best raw value of each run: reduceat over the flat map cut at every run's start and end gives the
    # maxima of the runs (even slots) and of the gaps between them (odd slots, dropped). One trailing cell
    # keeps an end at the very last pixel a valid index.
    flat = np.append(raw.reshape(-1), 0.0)
    cuts = np.stack([rows * width + starts, rows * width + ends], axis=1).reshape(-1)
    run_max = np.maximum.reduceat(flat, cuts)[0::2] if n else flat[:0]
    out = np.empty((roots.size, 6))
    out[:, 0] = height
    np.minimum.at(out[:, 0], component, rows)
    out[:, 1] = width
    np.minimum.at(out[:, 1], component, starts)
    out[:, 2] = 0
    np.maximum.at(out[:, 2], component, rows + 1)
    out[:, 3] = 0
    np.maximum.at(out[:, 3], component, ends)
    out[:, 4] = np.bincount(component, weights=ends - starts, minlength=roots.size)
    out[:, 5] = -np.inf
    np.maximum.at(out[:, 5], component, run_max)
    return out


@dataclass(frozen=True)
class Localization:
    """Post-processed result for one frame."""

    upsampled: np.ndarray  # float32 [H, W], raw units (cosine / tau) of the audio-visual map
    normalized: np.ndarray  # float32 [H, W] in [0, 1]: the map the boxes come from (fused with OGL)
    boxes: list[Box]


def served_map(
    heatmap: np.ndarray,
    frame_size: tuple[int, int],
    objectness: np.ndarray | None = None,
    ogl_alpha: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(audio-visual map upsampled to `frame_size` in raw units, the served map normalised to [0, 1]): the
    audio-visual map alone, or fused with `objectness` when both it and `ogl_alpha` are given."""
    height, width = frame_size
    upsampled = upsample(heatmap, height, width)
    normalized = normalize(upsampled)
    if objectness is not None and ogl_alpha is not None:
        normalized = fuse_objectness(normalized, upsample(objectness, height, width), ogl_alpha)
    return upsampled, normalized


def localize(
    heatmap: np.ndarray,
    frame_size: tuple[int, int],
    *,
    tau: float,
    threshold: float = contract.BOX_THRESHOLD,
    min_area: float = contract.BOX_MIN_AREA,
    objectness: np.ndarray | None = None,
    ogl_alpha: float | None = None,
) -> Localization:
    """Upsample the model's heatmap to `frame_size` (height, width), normalise it (fused with the objectness
    map when `objectness` and `ogl_alpha` are given) and find boxes."""
    upsampled, normalized = served_map(heatmap, frame_size, objectness, ogl_alpha)
    boxes = find_boxes(normalized, upsampled, threshold=threshold, min_area=min_area, score_scale=tau)
    return Localization(upsampled, normalized, boxes)


# ---------------------------------------------------------------------------------------------- images


def quantize(normalized: np.ndarray) -> np.ndarray:
    """A normalised map in [0, 1] as uint8 round(255 x value): the bare-map PNG's pixels, and the index into
    the overlay's colormap."""
    return np.rint(np.clip(normalized, 0.0, 1.0) * 255.0).astype(np.uint8)


def heatmap_png(normalized: np.ndarray) -> bytes:
    """The bare heatmap: 8-bit greyscale PNG, round(255 x normalised value) per pixel."""
    return png_bytes(Image.fromarray(quantize(normalized), mode="L"))


def png_base64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
