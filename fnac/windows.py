"""Where the windows of a sweep over a clip sit: pure arithmetic on durations, shared by decoding
(`fnac.media`), the pipeline's window limit and the overlay renderer."""

from __future__ import annotations

import math


def sweep_times(duration: float, *, clip_seconds: float, stride: float) -> list[float]:
    """Window centres for a sweep: every `stride` seconds, first and last windows fully inside the clip.

    A clip shorter than one window gives a single window at its middle.
    """
    n = sweep_count(duration, clip_seconds=clip_seconds, stride=stride)
    if duration <= clip_seconds:
        return [duration / 2]
    return [round(clip_seconds / 2 + k * stride, 6) for k in range(n)]


def sweep_span(
    duration: float, *, clip_seconds: float, stride: float, start: float = 0.0, end: float | None = None
) -> tuple[int, int]:
    """Which of `sweep_times`' windows a stretch [start, end) of the clip needs, as indices [first, stop): every
    window centred inside it, plus the nearest one before and after (an overlay interpolates between them)."""
    n = sweep_count(duration, clip_seconds=clip_seconds, stride=stride)
    if duration <= clip_seconds:
        return 0, 1
    end = duration if end is None else end
    half = clip_seconds / 2
    first = min(max(0, math.floor((start - half) / stride + 1e-9)), n - 1)
    stop = min(n, max(0, math.ceil((end - half) / stride - 1e-9)) + 1)
    return int(first), int(max(stop, first + 1))


def sweep_count(duration: float, *, clip_seconds: float, stride: float) -> float:
    """How many windows `sweep_times` gives (math.inf when too many to count), without building them: check
    it against a limit first, since a tiny stride would otherwise build billions of times."""
    if stride <= 0:
        raise ValueError("stride must be positive")
    if duration <= clip_seconds:
        return 1
    steps = (duration - clip_seconds) / stride + 1e-9
    return math.floor(steps) + 1 if math.isfinite(steps) else math.inf
