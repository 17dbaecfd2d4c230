"""Painting the overlay into the YUV planes of video frames: blending is linear, so blending in YUV with the jet
colours converted by the frame's own colour matrix gives the picture that blending in RGB gives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

from fnac.render.label import LabelPatch
from fnac.render.overlay import BOX_COLOR, JET_LUT, BoxLike, box_line_width
from fnac.render.yuv import ColorMatrix

try:  # the compiled inner loop (fnac/render/_blend.c); without it the numpy version below gives the same bytes
    from fnac.render import _blend
except ImportError:  # pragma: no cover - a build without a C compiler
    _blend = None

_ALPHA_STEPS = 40  # the video's alpha is rounded to 1/40 (0.5 and 0.2 exactly): blend tables cached per step


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
    rows: np.ndarray  # int32 [H]: the source row j of each output row (the segments, row by row)
    weights: np.ndarray  # float32 [H]: the weight of row j+1 in each output row

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
        return cls(upsample_weights(shape[1], size[1]), segments, low.astype(np.int32), high)

    def columns(self, small: np.ndarray) -> np.ndarray:
        """float32 [h, W]: `small` upsampled along the columns, the first of the two passes."""
        return small.astype(np.float32) @ self.cols.T

    def __call__(self, small: np.ndarray, out: np.ndarray, work: np.ndarray | None = None) -> None:
        """Upsample `small` into `out`. With `work` (float32, at least the size of `out`), `out` may be an integer
        array: each value is computed in float32 and truncated on the way in, with no float pass over `out`."""
        partial = self.columns(small)  # [h, W]
        step = np.diff(partial, axis=0)
        for first, end, j, weight in self.segments:
            target = out[first:end]
            if j < len(step):
                scratch = target if work is None else work[first:end]
                np.multiply(weight, step[j], out=scratch)
                np.add(scratch, partial[j], out=target, casting="unsafe")
            else:
                np.copyto(target, partial[j], casting="unsafe")


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
        self._luma_in_range = height >= h and width >= w  # see map_values

    def map_values(self, heatmap: np.ndarray) -> list[np.ndarray]:
        """The 8-bit map, round(255 x normalised upsampled heatmap), at luma and at chroma resolution, as
        uint16 shifted left by 8 bits: the row offsets into the blend tables. Valid until the next call."""
        scaled = self._scaled(heatmap)
        luma_up, chroma_up = self.upsamplers
        luma, chroma = self._base
        if self._luma_in_range:
            # Luma: the extremes above are this grid's, so every value lies in [0.5, 255.5] up to float error
            # and truncation after + 0.5 rounds it; written straight into the integer map, no clipping pass.
            luma_up(scaled, luma, work=self._values[0])
        else:  # a frame smaller than the map: "upsampling" mixes more than two rows, so clip as for chroma
            luma_up(scaled, self._values[0])
            np.clip(self._values[0], 0.0, 255.5, out=self._values[0])
            np.copyto(luma, self._values[0], casting="unsafe")
        # Chroma sits between luma pixels and can pass the luma grid's extremes slightly: clip first.
        chroma_up(scaled, self._values[1])
        np.clip(self._values[1], 0.0, 255.5, out=self._values[1])
        np.copyto(chroma, self._values[1], casting="unsafe")
        for base in self._base:
            np.left_shift(base, 8, out=base)
        return self._base

    def _scaled(self, heatmap: np.ndarray) -> np.ndarray:
        """The small map, scaled so that its upsampled values are 255 x the normalised map + 0.5."""
        heatmap = np.asarray(heatmap, dtype=np.float64)
        corners = self.extreme_rows @ heatmap @ self.extreme_cols.T
        low, high = float(corners.min()), float(corners.max())
        if (
            np.ptp(heatmap) <= 1e-12 or high - low <= 1e-12
        ):  # flat (e.g. silence): 0, as postprocess.normalize
            return np.full(heatmap.shape, 0.5)
        # normalised, x 255, + 0.5 to round half up by truncation (the weights of each pixel sum to 1)
        return (heatmap - low) * (255.0 / (high - low)) + 0.5

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
        if _blend is not None:
            self._paint_compiled(planes, out, heatmap, alpha)
        else:
            self._paint_numpy(planes, out, heatmap, alpha)
        for box in boxes:
            self._box(out, box)

    def _paint_compiled(
        self, planes: Sequence[np.ndarray], out: Sequence[np.ndarray], heatmap: np.ndarray, alpha: float
    ) -> None:
        """`_paint_numpy` in one compiled pass per plane (fnac/render/_blend.c): the same bytes."""
        scaled = self._scaled(heatmap)
        luma_up, chroma_up = self.upsamplers
        luma, chroma = (luma_up, luma_up.columns(scaled)), (chroma_up, chroma_up.columns(scaled))
        for plane, target, table, (upsampler, partial) in zip(
            planes, out, self.tables(alpha), (luma, chroma, chroma), strict=True
        ):
            _blend.blend_plane(partial, upsampler.rows, upsampler.weights, plane, table, target)

    def _paint_numpy(
        self, planes: Sequence[np.ndarray], out: Sequence[np.ndarray], heatmap: np.ndarray, alpha: float
    ) -> None:
        luma, chroma = self.map_values(heatmap)
        for plane, target, base, work, table in zip(
            planes, out, (luma, chroma, chroma), (*self._work, self._work[1]), self.tables(alpha), strict=True
        ):
            np.bitwise_or(base, plane, out=work)
            # Every uint16 index is inside the 65,536-entry table, so "wrap" never wraps; it spares take()
            # the bounds checks and the copy it makes of `out` in its default "raise" mode.
            np.take(table, work, out=target, mode="wrap")

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
        for k, (keep, added) in enumerate(patch.blend):
            top, left = (patch.top, patch.left) if k == 0 else (patch.top // 2, patch.left // 2)
            region = out[k][top : top + keep.shape[0], left : left + keep.shape[1]]
            blended = region * keep
            blended += added
            np.rint(blended, out=blended)
            np.clip(blended, 0, 255, out=blended)
            region[...] = blended
