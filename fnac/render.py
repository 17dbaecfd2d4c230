"""Drawing localization results: the PNG overlay and bare map of one window, and the overlay video of a clip.

The rules, in one place (the demo page's player, service/static/index.html, follows the same ones):
- Colour: the heatmap, upsampled to the frame and min-max normalised as in `fnac.postprocess`, is quantised to
  8 bits (`postprocess.quantize`, the values of the bare-map PNG) and coloured with the jet colormap
  (blue -> cyan -> yellow -> red).
- Blend: the colours go over the frame with alpha 0.5 where the window is sounding and 0.2 where it is not (a
  dimmed map). Boxes are white outlines max(1, round(min(W, H) / 200)) px wide, drawn inside the box.
- Time (video): the windows of a sweep are centred every `stride` seconds. The map at time t interpolates
  linearly between the raw heatmaps of the two windows around t and is then upsampled, normalised and coloured
  as above; before the first window's centre and after the last one's, that window's map holds. The alpha is
  interpolated the same way, so the map fades as a sound stops. Boxes, score and sounding are the nearest
  window's (a tie goes to the earlier one), and a window that is not sounding shows no boxes.
- OGL (windows that serve the fused map): the objectness map is interpolated in time like the heatmap and the
  two are fused as `fnac.postprocess.fuse_objectness` does at the frame's size, so video, PNG and boxes agree.
- Frames (video): a frame shows the map at its presentation time, except that the frame on screen at a
  window's centre shows that window exactly, so it is the window's PNG overlay (plus the score indicator).
- Video: H.264 (libx264, yuv420p, `VideoEncoding`) at the displayed size, upright, the source's frame
  timestamps kept; the clip's own audio re-encoded as AAC. A top-left label gives the nearest window's score,
  the model's threshold and whether it is sounding.

The video path paints in the decoded YUV planes instead of converting every frame to RGB and back: blending is
linear, so blending in YUV with the jet colours converted by the frame's own colour matrix gives the same
picture as blending in RGB, at a fraction of the cost (docs/BENCHMARKS.md compares the whole render with a
plain FFmpeg transcode).
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Protocol

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image, ImageDraw, ImageFont

from fnac import media, postprocess

DEFAULT_STRIDE = 0.5  # seconds between the windows of an overlay video
OVERLAY_ALPHA = 0.5
DIMMED_ALPHA = 0.2  # the map of a window that is not sounding
BOX_COLOR = (255, 255, 255)
_ALPHA_STEPS = 40  # the video's alpha is rounded to 1/40 (0.5 and 0.2 exactly): blend tables cached per step


class BoxLike(Protocol):
    x0: int
    y0: int
    x1: int
    y1: int


class WindowLike(Protocol):
    """What the renderer needs of a window's result (`fnac.pipeline.WindowResult` has it)."""

    time: float | None
    heatmap: np.ndarray  # float [h, w], raw (cosine / tau); or the API schema's Heatmap
    score: float
    sounding: bool
    boxes: Sequence[BoxLike]


# ---------------------------------------------------------------------------------------------- colours


def jet(values: np.ndarray) -> np.ndarray:
    """Jet colormap: float [0, 1] -> uint8 RGB (blue -> cyan -> yellow -> red)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


JET_LUT = jet(np.arange(256) / 255.0)  # uint8 [256, 3]: the colour of each 8-bit map value


def map_alpha(sounding: bool) -> float:
    return OVERLAY_ALPHA if sounding else DIMMED_ALPHA


# ---------------------------------------------------------------------------------------------- images


def overlay_image(
    frame: np.ndarray, normalized: np.ndarray, boxes: Sequence[BoxLike], *, sounding: bool = True
) -> np.ndarray:
    """The frame (uint8 [H, W, 3]) with the coloured map blended on and the boxes drawn (uint8 [H, W, 3]).

    A frame that is not `sounding` gets the dimmed map and no boxes, whatever `boxes` holds.
    """
    alpha = map_alpha(sounding)
    colours = JET_LUT[postprocess.quantize(normalized)].astype(np.float32)
    blended = (1.0 - alpha) * frame.astype(np.float32) + alpha * colours
    image = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    if sounding:
        draw = ImageDraw.Draw(image)
        line = box_line_width(image.height, image.width)
        for box in boxes:
            draw.rectangle((box.x0, box.y0, box.x1 - 1, box.y1 - 1), outline=BOX_COLOR, width=line)
    return np.asarray(image)


def overlay_png(
    frame: np.ndarray, normalized: np.ndarray, boxes: Sequence[BoxLike], *, sounding: bool = True
) -> bytes:
    """`overlay_image` as PNG."""
    return postprocess.png_bytes(
        Image.fromarray(overlay_image(frame, normalized, boxes, sounding=sounding), mode="RGB")
    )


def box_line_width(height: int, width: int) -> int:
    return max(1, round(min(height, width) / 200))


# ---------------------------------------------------------------------------------------------- timeline


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


# ---------------------------------------------------------------------------------------------- YUV painting


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


@cache
def upsample_weights(n_in: int, n_out: int) -> np.ndarray:
    """float32 [n_out, n_in]: the weights of Pillow's bilinear resize along one axis (`postprocess.upsample`), so
    upsample(m) == W_rows @ m @ W_cols.T."""
    weights = np.empty((n_out, n_in), dtype=np.float32)
    for j in range(n_in):
        basis = np.zeros((1, n_in), dtype=np.float32)
        basis[0, j] = 1.0
        row = Image.fromarray(basis, mode="F").resize((n_out, 1), Image.Resampling.BILINEAR)
        weights[:, j] = np.asarray(row, dtype=np.float32)[0]
    return weights


@cache
def _extreme_samples(n_in: int, n_out: int) -> np.ndarray:
    """Output positions where a bilinear upsampling from n_in to n_out can take its extremes.

    Along one axis the upsampled map is piecewise linear in the source coordinate, with corners at the source
    samples, so over the output grid its min and max lie next to a corner (or at an end). In two dimensions,
    the rows and columns next to corners contain the extremes of the whole map.
    """
    source = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    picks = {0, n_out - 1}
    for corner in range(n_in):
        below = np.flatnonzero(source <= corner)
        above = np.flatnonzero(source >= corner)
        if below.size:
            picks.add(int(below[-1]))
        if above.size:
            picks.add(int(above[0]))
    return np.array(sorted(picks))


@dataclass(frozen=True)
class _Upsampler:
    """Bilinear upsampling of small maps to one size (`upsample_weights` along both axes), computed as the
    columns on the small map, then each output row as a blend of two of its rows: two passes over the output."""

    cols: np.ndarray  # float32 [W, w]
    segments: list[tuple[int, int, int, np.ndarray]]  # (first row, end row, source row j, weight of row j+1)

    @classmethod
    def of(cls, shape: tuple[int, int], size: tuple[int, int]) -> _Upsampler:
        rows = upsample_weights(shape[0], size[0])
        low = np.argmax(rows != 0, axis=1)  # the first source row each output row uses
        high = np.take_along_axis(rows, np.minimum(low + 1, shape[0] - 1)[:, None], axis=1)[:, 0]
        high = np.where(low + 1 < shape[0], high, 0.0).astype(np.float32)
        segments = []
        for j in np.unique(low):
            where = np.flatnonzero(low == j)
            segments.append((int(where[0]), int(where[-1]) + 1, int(j), high[where][:, None]))
        return cls(upsample_weights(shape[1], size[1]), segments)

    def __call__(self, small: np.ndarray, out: np.ndarray) -> None:
        partial = small.astype(np.float32) @ self.cols.T  # [h, W]
        step = np.diff(partial, axis=0)
        for first, end, j, weight in self.segments:
            target = out[first:end]
            if j < len(step):
                np.multiply(weight, step[j], out=target)
                np.add(target, partial[j], out=target)
            else:
                target[...] = partial[j]


class FramePainter:
    """Paints the overlay into the planes of upright yuv420p frames of one size and colour matrix."""

    def __init__(self, height: int, width: int, heatmap_shape: tuple[int, int], colors: ColorMatrix):
        if height % 2 or width % 2:
            raise ValueError("yuv420p frames have even sizes")
        h, w = heatmap_shape
        self.height, self.width, self.colors = height, width, colors
        # Luma at the frame's pixels; chroma at the centres of 2 x 2 pixel blocks, i.e. the same map upsampled
        # to half the size.
        self.upsamplers = [
            _Upsampler.of((h, w), (height, width)),
            _Upsampler.of((h, w), (height // 2, width // 2)),
        ]
        self.extreme_rows = upsample_weights(h, height)[_extreme_samples(h, height)]
        self.extreme_cols = upsample_weights(w, width)[_extreme_samples(w, width)]
        self.jet_yuv = colors.from_rgb(JET_LUT)  # [256, 3]
        white = colors.from_rgb(np.array(BOX_COLOR, dtype=np.uint8))
        self.white = np.rint(white).clip(0, 255).astype(np.uint8)
        self.line = box_line_width(height, width)
        self._tables: dict[int, list[np.ndarray]] = {}
        # Work buffers, reused: allocating frame-sized arrays per frame costs more than the arithmetic.
        shapes = [(height, width), (height // 2, width // 2)]
        self._values = [np.empty(shape, np.float32) for shape in shapes]
        self._base = [np.empty(shape, np.uint16) for shape in shapes]
        self._work = [np.empty(shape, np.uint16) for shape in shapes]

    def map_values(self, heatmap: np.ndarray) -> list[np.ndarray]:
        """The 8-bit map, round(255 x normalised upsampled heatmap), at luma and at chroma resolution, as
        uint16 shifted left by 8 bits: the row offsets into the blend tables. Valid until the next call."""
        heatmap = np.asarray(heatmap, dtype=np.float64)
        corners = self.extreme_rows @ heatmap @ self.extreme_cols.T
        low, high = float(corners.min()), float(corners.max())
        if (
            np.ptp(heatmap) <= 1e-12 or high - low <= 1e-12
        ):  # flat (e.g. silence): 0, as postprocess.normalize
            scaled = np.full(heatmap.shape, 0.5)
        else:  # normalised, x 255, + 0.5 to round half up below (the weights of each pixel sum to 1)
            scaled = (heatmap - low) * (255.0 / (high - low)) + 0.5
        for upsample, values, base in zip(self.upsamplers, self._values, self._base, strict=True):
            upsample(scaled, values)
            # Chroma sits between luma pixels and can pass the luma grid's extremes slightly.
            np.clip(values, 0.0, 255.5, out=values)
            np.copyto(base, values, casting="unsafe")  # truncation after + 0.5: rounding
            np.left_shift(base, 8, out=base)
        return self._base

    def fused(self, heatmap: np.ndarray, objectness: np.ndarray, ogl_alpha: float) -> np.ndarray:
        """A small map whose upsampled, normalised image is `postprocess.fuse_objectness` of the two maps
        upsampled to the frame: upsampling is linear with weights summing to one, so normalising each map by
        its upsampled extremes before the weighted sum commutes with the upsampling (`map_values` then does
        the outer normalisation)."""

        def normalized(values: np.ndarray) -> np.ndarray:
            values = np.asarray(values, dtype=np.float64)
            corners = self.extreme_rows @ values @ self.extreme_cols.T
            low, high = float(corners.min()), float(corners.max())
            if high - low <= 1e-12:  # a constant map normalises to zeros (postprocess.normalize)
                return np.zeros_like(values)
            return (values - low) / (high - low)

        return ogl_alpha * normalized(heatmap) + (1.0 - ogl_alpha) * normalized(objectness)

    def tables(self, alpha: float) -> list[np.ndarray]:
        """Per plane, uint8 [256 x 256]: round((1 - alpha) x pixel + alpha x jet colour), by (map value, pixel)."""
        step = round(alpha * _ALPHA_STEPS)
        if step not in self._tables:
            a = step / _ALPHA_STEPS
            pixel = np.arange(256, dtype=np.float64)[None, :]
            self._tables[step] = [
                np.rint((1.0 - a) * pixel + a * self.jet_yuv[:, k][:, None])
                .clip(0, 255)
                .astype(np.uint8)
                .ravel()
                for k in range(3)
            ]
        return self._tables[step]

    def paint(
        self,
        planes: Sequence[np.ndarray],
        out: Sequence[np.ndarray],
        heatmap: np.ndarray,
        alpha: float,
        boxes: Sequence[BoxLike],
    ) -> None:
        """Blend the map into Y, U, V (`planes`, read) and write the result to `out`; then draw `boxes`."""
        luma, chroma = self.map_values(heatmap)
        for plane, target, base, work, table in zip(
            planes, out, (luma, chroma, chroma), (*self._work, self._work[1]), self.tables(alpha), strict=True
        ):
            np.bitwise_or(base, plane, out=work)
            np.take(table, work, out=target)
        for box in boxes:
            self._box(out, box)

    def _box(self, out: Sequence[np.ndarray], box: BoxLike) -> None:
        """A white outline inside the box. Chroma samples take white in proportion to the outline's share of
        their 2 x 2 pixels, as a 4:2:0 encoding of the RGB overlay would."""
        x0, y0 = max(0, int(box.x0)), max(0, int(box.y0))
        x1, y1 = min(self.width, int(box.x1)), min(self.height, int(box.y1))
        if x1 <= x0 or y1 <= y0:
            return
        left, top = x0 - x0 % 2, y0 - y0 % 2
        right, bottom = x1 + x1 % 2, y1 + y1 % 2
        mask = np.zeros((bottom - top, right - left), dtype=bool)
        inner = mask[y0 - top : y1 - top, x0 - left : x1 - left]
        w = self.line
        inner[:w], inner[-w:], inner[:, :w], inner[:, -w:] = True, True, True, True
        out[0][top:bottom, left:right][mask] = self.white[0]
        share = mask.reshape(mask.shape[0] // 2, 2, mask.shape[1] // 2, 2).mean(axis=(1, 3))
        for k in (1, 2):
            region = out[k][top // 2 : bottom // 2, left // 2 : right // 2]
            region[...] = np.rint(region + share * (float(self.white[k]) - region)).astype(np.uint8)

    def label(self, out: Sequence[np.ndarray], patch: LabelPatch) -> None:
        """Composite a label patch (see `label_patch`) at its place."""
        for k, (values, alpha) in enumerate(patch.planes):
            top, left = (patch.top, patch.left) if k == 0 else (patch.top // 2, patch.left // 2)
            region = out[k][top : top + values.shape[0], left : left + values.shape[1]]
            blended = region * (1.0 - alpha) + values * alpha
            region[...] = np.rint(blended).clip(0, 255).astype(np.uint8)


@dataclass(frozen=True)
class LabelPatch:
    top: int
    left: int
    planes: list[tuple[np.ndarray, np.ndarray]]  # per plane: premultiplied-free values and alpha, float


def label_region(height: int, width: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the rectangle the score label may cover in a frame of this size (x1, y1 exclusive)."""
    _, margin, box_w, box_h = _label_box(height, width)
    return 0, 0, min(width, margin + box_w), min(height, margin + box_h)


def _label_box(height: int, width: int) -> tuple[int, int, int, int]:
    """Font size, margin and the label box's (even) width and height, sized for the longest label."""
    size = max(10, round(min(height, width) / 26))
    margin = size // 2
    font = _font(size)
    widest = max(font.getlength("not sounding") + size, font.getlength(label_text(-0.999, False, -0.999)[1]))
    box_w = min(width - 2 * margin, math.ceil(widest) + 2 * margin)
    box_h = min(height - 2 * margin, round(2.7 * size) + margin)
    return size, margin, max(2, box_w - box_w % 2), max(2, box_h - box_h % 2)


def label_text(score: float, sounding: bool, threshold: float | None) -> tuple[str, str]:
    """The label's two lines, e.g. ("sounding", "score 0.942 · threshold 0.300")."""
    state = "sounding" if sounding else "not sounding"
    return state, f"score {score:.3f}" + ("" if threshold is None else f" · threshold {threshold:.3f}")


def label_patch(
    height: int, width: int, colors: ColorMatrix, score: float, sounding: bool, threshold: float | None
) -> LabelPatch:
    """The score label as YUV planes with alpha: a dark box with a coloured dot, the sounding state and the
    score beside the model's threshold, in white."""
    size, margin, box_w, box_h = _label_box(height, width)
    font = _font(size)
    state, numbers = label_text(score, sounding, threshold)
    image = Image.new("RGBA", (box_w, box_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, box_w - 1, box_h - 1), radius=size // 3, fill=(0, 0, 0, 170))
    first, second = margin + round(0.6 * size), margin + round(1.85 * size)  # the two lines' middles
    radius = max(2, size // 3)
    dot = (40, 200, 90, 255) if sounding else (150, 150, 150, 255)
    draw.ellipse((margin, first - radius, margin + 2 * radius, first + radius), fill=dot)
    draw.text(
        (margin + 2 * radius + size // 3, first), state, font=font, fill=(255, 255, 255, 255), anchor="lm"
    )
    draw.text((margin, second), numbers, font=font, fill=(255, 255, 255, 255), anchor="lm")
    rgba = np.asarray(image)
    yuv = colors.from_rgb(rgba[..., :3])
    alpha = rgba[..., 3].astype(np.float64) / 255.0
    # Chroma: the 2 x 2 mean, weighted by alpha (so transparent pixels do not pull the colour).
    a2 = alpha.reshape(box_h // 2, 2, box_w // 2, 2).mean(axis=(1, 3))
    planes = [(yuv[..., 0], alpha)]
    for k in (1, 2):
        weighted = (yuv[..., k] * alpha).reshape(box_h // 2, 2, box_w // 2, 2).mean(axis=(1, 3))
        planes.append((np.divide(weighted, a2, out=np.full_like(a2, 128.0), where=a2 > 0), a2))
    top = left = margin - margin % 2
    return LabelPatch(top, left, planes)


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


# ---------------------------------------------------------------------------------------------- video


@dataclass(frozen=True)
class VideoEncoding:
    """Encoder settings of the overlay video; `ffmpeg_args` gives the same settings to the FFmpeg CLI."""

    preset: str = "veryfast"
    crf: int = 23
    audio_bitrate: int = 128_000

    def x264_options(self) -> dict[str, str]:
        return {"preset": self.preset, "crf": str(self.crf)}

    def ffmpeg_args(self) -> list[str]:
        return [
            *("-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf), "-pix_fmt", "yuv420p"),
            *("-c:a", "aac", "-b:a", str(self.audio_bitrate)),
        ]


@dataclass(frozen=True)
class RenderedVideo:
    """What `render_video` wrote."""

    frames: int
    width: int
    height: int
    start: float  # seconds into the source
    duration: float  # seconds of video written


@dataclass(frozen=True)
class RenderLimits:
    """Bounds on one overlay video: its length (the clip, or start..end), its frames and a frame's pixels."""

    max_seconds: float = 600.0
    max_frames: int = 36_000
    max_pixels: int = media.DEFAULT_MAX_PIXELS


def check_length(seconds: float, limits: RenderLimits, name: str) -> None:
    """`MediaTooLarge("render_too_long")` when an overlay video of this many seconds is beyond `limits`."""
    if seconds > limits.max_seconds:
        raise media.MediaTooLarge(
            "render_too_long",
            f"the overlay video of '{name}' would last {seconds:.1f} s; the limit is {limits.max_seconds:g} s: "
            "pick a shorter start..end stretch",
        )


def render_video(
    source: media.Source,
    windows: Sequence[WindowLike],
    out: str | os.PathLike | io.BufferedIOBase,
    *,
    start: float | None = None,
    end: float | None = None,
    threshold: float | None = None,
    limits: RenderLimits = RenderLimits(),
    encoding: VideoEncoding = VideoEncoding(),
    name: str = "upload",
) -> RenderedVideo:
    """Write the overlay MP4 of `source` (a clip: path or bytes) from `start` to `end` seconds (default: all
    of it), with the map, boxes and label of `windows` (the results of a sweep over the clip), to `out` (a
    path or a writable binary file).

    Raises `media.MediaError` for unusable input and `media.MediaTooLarge` (`render_too_long`,
    `too_many_frames`, `frame_too_large`) beyond `limits`.
    """
    timeline = Timeline(windows)
    if isinstance(out, str | os.PathLike):
        return _render_to_path(source, timeline, Path(out), start, end, threshold, limits, encoding, name)
    # The MP4 index goes in front of the data (fast start), which needs a real file to rewrite.
    with tempfile.TemporaryDirectory(prefix="fnac-render-") as folder:
        path = Path(folder) / "overlay.mp4"
        rendered = _render_to_path(source, timeline, path, start, end, threshold, limits, encoding, name)
        with path.open("rb") as written:
            while chunk := written.read(1 << 20):
                out.write(chunk)
    return rendered


def render_video_bytes(source: media.Source, windows: Sequence[WindowLike], **options) -> bytes:
    """`render_video` into memory: the MP4's bytes."""
    buffer = io.BytesIO()
    render_video(source, windows, buffer, **options)
    return buffer.getvalue()


def _render_to_path(
    source, timeline: Timeline, path: Path, start, end, threshold, limits: RenderLimits, encoding, name
) -> RenderedVideo:
    with media._open(source, name) as container:
        video = media._video_stream(container, name)
        audio = container.streams.audio[0] if container.streams.audio else None
        video.thread_type = "AUTO"  # frame-threaded decoding, as the FFmpeg CLI does
        width, height = video.codec_context.width, video.codec_context.height
        if width * height > limits.max_pixels:
            raise media.MediaTooLarge(
                "frame_too_large",
                f"video frames in '{name}' are {width}x{height}; the limit is {limits.max_pixels} pixels",
            )
        begin, finish = media.check_range(start, end, media._reported_duration(container), name)
        fps = video.average_rate or video.guessed_rate or Fraction(30)
        check_length(finish - begin, limits, name)
        if math.isfinite(finish) and (finish - begin) * fps > limits.max_frames:
            raise media.MediaTooLarge(
                "too_many_frames",
                f"the overlay video of '{name}' would have about {math.ceil((finish - begin) * fps)} frames "
                f"({float(fps):.4g} fps); the limit is {limits.max_frames}: pick a shorter start..end stretch",
            )
        with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as output:
            writer = _Writer(output, video, audio, begin, finish, fps, encoding)
            painter: FramePainter | None = None
            labels: dict[int, LabelPatch] = {}
            count, shown_end = 0, begin
            target: av.VideoFrame | None = None  # one output frame, reused
            for item in _source_frames(container, video, audio, begin, finish, fps, name):
                if isinstance(item, av.AudioFrame):
                    writer.audio(item)
                    continue
                frame, shown_from, shown_until = item
                count += 1
                if count > limits.max_frames or shown_from - begin > limits.max_seconds:
                    raise media.MediaTooLarge(
                        "render_too_long",
                        f"the overlay video of '{name}' would exceed {limits.max_frames} frames or "
                        f"{limits.max_seconds:g} s: pick a shorter start..end stretch",
                    )
                orientation = media.display_orientation(frame)  # converted frames may lose the side data
                frame = _as_yuv420(frame)
                planes = _upright_planes(frame, orientation)
                if painter is None:
                    # x264 encodes 4:2:0 at even sizes only: an odd displayed size loses its last row/column.
                    even_h, even_w = planes[0].shape[0] // 2 * 2, planes[0].shape[1] // 2 * 2
                    painter = FramePainter(even_h, even_w, timeline.heatmaps.shape[1:], ColorMatrix.of(frame))
                    writer.start_video(even_w, even_h, frame)
                when = timeline.frame_time(shown_from, shown_until)
                nearest = timeline.nearest(when)
                window = timeline.windows[nearest]
                if nearest not in labels:
                    labels[nearest] = label_patch(
                        painter.height,
                        painter.width,
                        painter.colors,
                        window.score,
                        window.sounding,
                        threshold,
                    )
                if target is None:
                    target = av.VideoFrame(painter.width, painter.height, "yuv420p")
                target.make_writable()  # a new buffer only if the encoder still holds this one
                painted = plane_arrays(target)
                shown = timeline.heatmap_at(when)
                if timeline.objectness is not None:
                    shown = painter.fused(shown, timeline.objectness_at(when), timeline.ogl_alpha)
                painter.paint(
                    _crop_even(planes),
                    painted,
                    shown,
                    timeline.alpha_at(when),
                    window.boxes if window.sounding else (),
                )
                painter.label(painted, labels[nearest])
                writer.video(target, max(shown_from, begin), min(shown_until, finish))
                shown_end = min(shown_until, finish)
            if painter is None:
                raise media.MediaError(
                    "no_video_frames", f"no video frames in '{name}' between {begin:g} s and {finish:g} s"
                )
            writer.close()
    return RenderedVideo(count, painter.width, painter.height, begin, shown_end - begin)


def _source_frames(
    container, video, audio, begin: float, finish: float, fps: Fraction, name: str
) -> Iterator[av.AudioFrame | tuple[av.VideoFrame, float, float]]:
    """The decoded audio frames, and the video frames on screen during [begin, finish), each with the time
    it is shown from and until (the next frame's time), in decoding order; times from the video's start."""
    video_start = float(video.start_time * video.time_base) if video.start_time is not None else 0.0
    if begin > 0:
        try:
            container.seek(int((video_start + begin) / video.time_base), stream=video, backward=True)
        except av.FFmpegError as exc:
            raise media.MediaError(
                "corrupt_media", f"video in '{name}' could not be decoded: {exc}"
            ) from None
    step = 1.0 / float(fps)
    held: tuple[av.VideoFrame, float] | None = None  # the last video frame, waiting for the next one's time
    streams = [s for s in (video, audio) if s is not None]
    try:
        for packet in container.demux(streams):
            for frame in packet.decode():
                if isinstance(frame, av.AudioFrame):
                    yield frame
                    continue
                shown = (
                    frame.time - video_start if frame.time is not None else (held[1] + step if held else 0.0)
                )
                if held is not None and shown > held[1]:
                    if held[1] >= finish:
                        return
                    if shown > begin:
                        yield held[0], held[1], shown
                held = (frame, shown) if held is None or shown > held[1] else held
    except av.FFmpegError as exc:
        if held is None:
            raise media.MediaError(
                "corrupt_media", f"video in '{name}' could not be decoded: {exc}"
            ) from None
        # A damaged tail: render what decoded.
    if held is not None and held[1] < finish:
        frame = held[0]
        length = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else step
        yield frame, held[1], min(held[1] + length, finish) if math.isfinite(finish) else held[1] + length


def plane_arrays(frame: av.VideoFrame) -> list[np.ndarray]:
    """Writable uint8 views of the planes of a planar frame, without the line padding."""
    arrays = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype=np.uint8)[: plane.line_size * plane.height]
        arrays.append(rows.reshape(plane.height, plane.line_size)[:, : plane.width])
    return arrays


def _as_yuv420(frame: av.VideoFrame) -> av.VideoFrame:
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


def _upright_planes(frame: av.VideoFrame, orientation: media.Orientation) -> list[np.ndarray]:
    """A yuv420p frame's Y, U, V planes as displayed (views, transposed and/or mirrored)."""
    planes = []
    for array in plane_arrays(frame):
        if orientation.transpose:
            array = array.swapaxes(0, 1)
        if orientation.flip_rows:
            array = array[::-1]
        if orientation.flip_cols:
            array = array[:, ::-1]
        planes.append(array)
    return planes


def _crop_even(planes: list[np.ndarray]) -> list[np.ndarray]:
    height, width = planes[0].shape[0] // 2 * 2, planes[0].shape[1] // 2 * 2
    return [
        planes[0][:height, :width],
        planes[1][: height // 2, : width // 2],
        planes[2][: height // 2, : width // 2],
    ]


class _Writer:
    """Encodes painted frames and the clip's audio into an open MP4 container.

    The output starts at `begin`: video timestamps are the source's, shifted; audio is cut to [begin, finish)
    by sample position. Audio decoded before the first video frame waits, since the MP4 header needs both
    streams.
    """

    def __init__(
        self, output, video, audio, begin: float, finish: float, fps: Fraction, encoding: VideoEncoding
    ):
        self.output, self.source_video, self.begin, self.finish = output, video, begin, finish
        self.fps, self.encoding = fps, encoding
        self.time_base = video.time_base or Fraction(1, 90000)
        self.video_stream = None
        self.waiting: list[av.AudioFrame] = []
        self.audio_stream = None
        self.audio_rate = None
        if audio is not None and audio.codec_context.sample_rate:
            self.audio_rate = audio.codec_context.sample_rate
            channels = audio.codec_context.channels or 1
            self.layout = "mono" if channels == 1 else "stereo"
            self.resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.audio_rate)
            self.audio_start = (
                float(audio.start_time * audio.time_base) if audio.start_time is not None else 0.0
            )
        self.position: int | None = None  # next input sample, counted from the audio's start
        self.written = 0  # audio samples written

    def start_video(self, width: int, height: int, first: av.VideoFrame) -> None:
        stream = self.output.add_stream("libx264", rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        context = stream.codec_context
        context.time_base = self.time_base
        context.options = self.encoding.x264_options()
        context.thread_count = 0  # as many as x264 wants, as the FFmpeg CLI does
        # Same colour tags as the source, so players convert the painted YUV back with the same matrix.
        context.colorspace = first.colorspace
        context.color_range = 2 if ColorMatrix.of(first).full_range else 1
        context.color_primaries = first.color_primaries
        context.color_trc = first.color_trc
        self.video_stream = stream
        if self.audio_rate is not None:
            self.audio_stream = self.output.add_stream("aac", rate=self.audio_rate)
            self.audio_stream.layout = self.layout
            self.audio_stream.bit_rate = self.encoding.audio_bitrate
        for frame in self.waiting:
            self._audio(frame)
        self.waiting.clear()

    def video(self, frame: av.VideoFrame, shown_from: float, shown_until: float) -> None:
        pts = round((shown_from - self.begin) / self.time_base)
        frame.pts = pts
        frame.duration = max(1, round((shown_until - self.begin) / self.time_base) - pts)
        frame.time_base = self.time_base
        self.output.mux(self.video_stream.encode(frame))

    def audio(self, frame: av.AudioFrame) -> None:
        if self.audio_rate is None:
            return
        if self.video_stream is None:
            self.waiting.append(frame)
        else:
            self._audio(frame)

    def _audio(self, frame: av.AudioFrame) -> None:
        rate = self.audio_rate
        if self.position is None:
            first = frame.time - self.audio_start if frame.time is not None else 0.0
            self.position = round(first * rate)
            gap = self.position - round(self.begin * rate)
            if gap > 0:  # after a seek the audio may start a little late: keep it in sync with silence
                self._encode(np.zeros((1 if self.layout == "mono" else 2, gap), dtype=np.float32))
        for converted in self.resampler.resample(frame):
            samples = converted.to_ndarray()  # [channels, n] float32
            lo = round(self.begin * rate) - self.position
            hi = (round(self.finish * rate) if math.isfinite(self.finish) else math.inf) - self.position
            self.position += samples.shape[1]
            kept = samples[:, max(0, lo) : max(0, min(samples.shape[1], hi))]
            if kept.shape[1]:
                self._encode(kept)

    def _encode(self, samples: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=self.layout)
        frame.sample_rate = self.audio_rate
        frame.pts = self.written
        frame.time_base = Fraction(1, self.audio_rate)
        self.written += samples.shape[1]
        self.output.mux(self.audio_stream.encode(frame))

    def close(self) -> None:
        for frame in self.waiting:  # no video frame came: nothing to write
            del frame
        self.output.mux(self.video_stream.encode(None))
        if self.audio_stream is not None:
            self.output.mux(self.audio_stream.encode(None))
