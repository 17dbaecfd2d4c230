"""Display orientation of video frames: the stream's display matrix (the `rotate` tag phones write) as a
transpose and mirrors, and a stored frame turned upright as a player shows it."""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np


@dataclass(frozen=True)
class Orientation:
    """How a stored video frame becomes the picture a player shows, from the stream's display matrix (the
    `rotate` tag phones write): transpose first, then mirror rows and/or columns. Together these express the
    four quarter turns and their mirror images; the identity is `Orientation()`."""

    transpose: bool = False
    flip_rows: bool = False  # upside down (vertical mirror)
    flip_cols: bool = False  # left-right mirror

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)


def orientation_from_matrix(matrix) -> Orientation:
    """The `Orientation` of an FFmpeg display matrix (9 int32 in AV_PKT_DATA_DISPLAYMATRIX layout).

    FFmpeg's rule (libavutil/display.h): the upper-left block [[a, b], [c, d]] sends a stored pixel (x, y)
    to the displayed (a x + c y, b x + d y), up to a shift, in pixel coordinates (x right, y down); the
    FFmpeg CLI's autorotation applies the same rule, and it is what a stream's `rotation` in ffprobe means.
    Rotations that are not quarter turns snap to the nearest one (phones do not write them).
    """
    a, b, c, d = (float(v) for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    if abs(a) + abs(d) >= abs(b) + abs(c):  # no quarter turn: x' = a x, y' = d y
        return Orientation(False, d < 0, a < 0)
    # A quarter turn: x' = c y, y' = b x, so the stored rows become displayed columns.
    return Orientation(True, b < 0, c < 0)


def display_orientation(frame) -> Orientation:
    """The orientation a decoded PyAV `VideoFrame` carries (its DISPLAYMATRIX side data; FFmpeg copies the
    stream's matrix onto every frame); `Orientation()` when there is none or it is unreadable."""
    try:
        side_data = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
    except Exception:  # a PyAV without typed side data, or a damaged entry: show the frame as stored
        return Orientation()
    if side_data is None:
        return Orientation()
    raw = bytes(side_data)
    if len(raw) < 36:
        return Orientation()
    return orientation_from_matrix(np.frombuffer(raw[:36], dtype="<i4"))


def upright(image: np.ndarray, orientation: Orientation) -> np.ndarray:
    """A stored frame [H, W, ...] as displayed (a contiguous copy, or `image` itself for the identity)."""
    if orientation.is_identity:
        return image
    return np.ascontiguousarray(upright_view(image, orientation))


def upright_view(image: np.ndarray, orientation: Orientation) -> np.ndarray:
    """A stored frame [H, W, ...] as displayed, as a view of `image` (transposed and/or mirrored)."""
    if orientation.transpose:
        image = image.swapaxes(0, 1)
    if orientation.flip_rows:
        image = image[::-1]
    if orientation.flip_cols:
        image = image[:, ::-1]
    return image
