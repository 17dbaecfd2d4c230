"""The windows of a sweep as functions of time: what an overlay video shows at each moment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fnac.render.overlay import BoxLike, map_alpha


class WindowLike(Protocol):
    """What the renderer needs of a window's result (`fnac.pipeline.WindowResult` has it)."""

    time: float | None
    heatmap: np.ndarray  # float [h, w], raw (cosine / tau); or the API schema's Heatmap
    score: float
    sounding: bool
    boxes: Sequence[BoxLike]


@dataclass(frozen=True)
class Window:
    """A window's results as plain values (a `WindowLike`), for windows made outside the pipeline (tests, benchmarks)."""

    time: float | None
    heatmap: np.ndarray
    score: float
    sounding: bool
    boxes: Sequence[BoxLike] = ()


class Timeline:
    """The windows of a sweep as functions of time (the interpolation rules in the module docstring)."""

    def __init__(self, windows: Sequence[WindowLike]):
        if not windows:
            raise ValueError("a timeline needs at least one window")
        ordered = sorted(windows, key=lambda w: w.time or 0.0)
        self.windows = ordered
        self.times = np.array([w.time or 0.0 for w in ordered], dtype=np.float64)
        self.heatmaps = np.stack([_heatmap_array(w.heatmap) for w in ordered])
        self.alphas = np.array([map_alpha(bool(w.sounding)) for w in ordered])
        # OGL: windows of the pipeline that serve the fused map carry their objectness map and the fusion
        # weight; the video then draws the fused map, as the PNG and the boxes do.
        fusion = {getattr(w, "ogl_alpha", None) for w in ordered}
        objects = [getattr(w, "objectness", None) for w in ordered]
        self.ogl_alpha: float | None = None
        self.objectness: np.ndarray | None = None
        if len(fusion) == 1 and None not in fusion and all(o is not None for o in objects):
            self.ogl_alpha = float(fusion.pop())
            self.objectness = np.stack([_heatmap_array(o) for o in objects])

    def blend(self, t: float) -> tuple[int, int, float]:
        """(i, j, a): the state at `t` is (1 - a) x window i + a x window j."""
        last = len(self.times) - 1
        j = int(np.searchsorted(self.times, t, side="right"))
        if j == 0:
            return 0, 0, 0.0
        if j > last:
            return last, last, 0.0
        i = j - 1
        return i, j, float((t - self.times[i]) / (self.times[j] - self.times[i]))

    def heatmap_at(self, t: float) -> np.ndarray:
        """The raw heatmap [h, w] shown at `t`."""
        i, j, a = self.blend(t)
        return (1.0 - a) * self.heatmaps[i] + a * self.heatmaps[j]

    def objectness_at(self, t: float) -> np.ndarray | None:
        """The raw objectness map [h, w] at `t` (interpolated like the heatmap), or None without OGL."""
        if self.objectness is None:
            return None
        i, j, a = self.blend(t)
        return (1.0 - a) * self.objectness[i] + a * self.objectness[j]

    def alpha_at(self, t: float) -> float:
        i, j, a = self.blend(t)
        return float((1.0 - a) * self.alphas[i] + a * self.alphas[j])

    def nearest(self, t: float) -> int:
        """Index of the window whose boxes, score and sounding are shown at `t` (ties: the earlier one)."""
        j = int(np.searchsorted(self.times, t, side="left"))
        if j == 0:
            return 0
        if j == len(self.times):
            return j - 1
        return j if self.times[j] - t < t - self.times[j - 1] else j - 1

    def frame_time(self, shown_from: float, shown_until: float) -> float:
        """The time whose map a frame on screen during [shown_from, shown_until) shows: a window centre inside
        that interval (the first one), else `shown_from`."""
        k = int(np.searchsorted(self.times, shown_from - 1e-6, side="left"))
        if k < len(self.times) and self.times[k] < shown_until - 1e-6:
            return float(self.times[k])
        return shown_from


def _heatmap_array(heatmap) -> np.ndarray:
    """A window's raw map as float64 [h, w]: an array, or the API schema's `Heatmap` (its `values`)."""
    values = heatmap.values if hasattr(heatmap, "values") and not isinstance(heatmap, np.ndarray) else heatmap
    return np.asarray(values, dtype=np.float64)
