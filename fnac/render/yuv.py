"""Decoded frames as YUV planes: their colour matrix, upright views of their planes, and conversion to 4:2:0."""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

from fnac.orientation import Orientation, upright_view


@dataclass(frozen=True)
class ColorMatrix:
    """How a frame's YUV relates to RGB: luma weights (Kr, Kb) and full or limited ("TV") range."""

    kr: float
    kb: float
    full_range: bool

    @classmethod
    def of(cls, frame: av.VideoFrame) -> ColorMatrix:
        """The conversion FFmpeg's swscale applies to this frame (its colorspace and range tags; untagged is
        BT.601, as swscale assumes)."""
        space = int(frame.colorspace)
        kr, kb = {1: (0.2126, 0.0722), 7: (0.212, 0.087), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}.get(
            space, (0.299, 0.114)
        )
        full = int(frame.color_range) == 2 or frame.format.name.startswith("yuvj")
        return cls(kr, kb, full)

    def from_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB [..., 3] -> float YUV [..., 3] in this matrix's code values."""
        r, g, b = (rgb[..., k].astype(np.float64) / 255.0 for k in range(3))
        luma = self.kr * r + (1.0 - self.kr - self.kb) * g + self.kb * b
        cb = (b - luma) / (2.0 * (1.0 - self.kb))
        cr = (r - luma) / (2.0 * (1.0 - self.kr))
        if self.full_range:
            return np.stack([255.0 * luma, 128.0 + 255.0 * cb, 128.0 + 255.0 * cr], axis=-1)
        return np.stack([16.0 + 219.0 * luma, 128.0 + 224.0 * cb, 128.0 + 224.0 * cr], axis=-1)


def plane_arrays(frame: av.VideoFrame) -> list[np.ndarray]:
    """Writable uint8 views of the planes of a planar frame, without the line padding."""
    arrays = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype=np.uint8)[: plane.line_size * plane.height]
        arrays.append(rows.reshape(plane.height, plane.line_size)[:, : plane.width])
    return arrays


def as_yuv420(frame: av.VideoFrame) -> av.VideoFrame:
    """The frame as 8-bit 4:2:0 YUV whose colour tags describe its values (what the painter and the output's
    tags follow). Other YUV layouts keep their matrix and range (swscale does not convert those); RGB and grey
    sources are converted with BT.601 in limited range and tagged so."""
    name = frame.format.name
    if name in ("yuv420p", "yuvj420p"):
        return frame
    if name.startswith("yuv"):
        full = name.startswith("yuvj") or int(frame.color_range) == 2
        converted = frame.reformat(format="yuvj420p" if name.startswith("yuvj") else "yuv420p")
        converted.colorspace, converted.color_range = frame.colorspace, 2 if full else 1
        converted.color_primaries, converted.color_trc = frame.color_primaries, frame.color_trc
        return converted
    return frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU601, dst_color_range=ColorRange.MPEG)


def upright_planes(frame: av.VideoFrame, orientation: Orientation) -> list[np.ndarray]:
    """A yuv420p frame's Y, U, V planes as displayed (views, transposed and/or mirrored)."""
    return [upright_view(array, orientation) for array in plane_arrays(frame)]


def crop_even(planes: list[np.ndarray]) -> list[np.ndarray]:
    height, width = planes[0].shape[0] // 2 * 2, planes[0].shape[1] // 2 * 2
    return [
        planes[0][:height, :width],
        planes[1][: height // 2, : width // 2],
        planes[2][: height // 2, : width // 2],
    ]
