"""The score label of an overlay video: its text, its place and its YUV planes with alpha."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fnac.render.yuv import ColorMatrix


@dataclass(frozen=True)
class LabelPatch:
    top: int
    left: int
    planes: list[tuple[np.ndarray, np.ndarray]]  # per plane: premultiplied-free values and alpha, float

    @cached_property
    def blend(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per plane, (1 - alpha, values x alpha): a pixel under the patch becomes pixel x the first + the
        second. Computed once per label, not once per frame."""
        return [(1.0 - alpha, values * alpha) for values, alpha in self.planes]


def label_region(height: int, width: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the rectangle the score label may cover in a frame of this size (x1, y1 exclusive)."""
    _, margin, box_w, box_h = _label_box(height, width)
    return 0, 0, min(width, margin + box_w), min(height, margin + box_h)


def _label_box(height: int, width: int) -> tuple[int, int, int, int]:
    """Font size, margin and the label box's (even) width and height, sized for the longest label."""
    size = max(10, round(min(height, width) / 26))
    margin = size // 2
    font = _font(size)
    state, numbers = label_text(-0.999, False, -0.999)  # the longest label there is
    widest = max(_spaced_width(state, font, size) + size, _spaced_width(numbers, font, size))
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
    _draw_spaced(draw, (margin + 2 * radius + size // 3, first), state, font, size)
    _draw_spaced(draw, (margin, second), numbers, font, size)
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


def _word_gap(font, size: int) -> float:
    # Pillow's default font has a narrow space (2 px at size 10): "not sounding" read as one word.
    return max(font.getlength(" "), round(0.3 * size))


def _spaced_width(text: str, font, size: int) -> float:
    words = text.split(" ")
    return sum(font.getlength(word) for word in words) + _word_gap(font, size) * (len(words) - 1)


def _draw_spaced(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font, size: int) -> None:
    """`text` at `xy` (left, middle), its words a readable gap apart."""
    x, y = xy
    for word in text.split(" "):
        draw.text((x, y), word, font=font, fill=(255, 255, 255, 255), anchor="lm")
        x += font.getlength(word) + _word_gap(font, size)
