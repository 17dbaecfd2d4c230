"""The colours and blending of an overlay, and the PNG overlay of one window (the rules in `fnac.render`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw

from fnac import postprocess

OVERLAY_ALPHA = 0.5
DIMMED_ALPHA = 0.2  # the map of a window that is not sounding
BOX_COLOR = (255, 255, 255)


class BoxLike(Protocol):
    x0: int
    y0: int
    x1: int
    y1: int


def jet(values: np.ndarray) -> np.ndarray:
    """Jet colormap: float [0, 1] -> uint8 RGB (blue -> cyan -> yellow -> red)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


JET_LUT = jet(np.arange(256) / 255.0)  # uint8 [256, 3]: the colour of each 8-bit map value


def map_alpha(sounding: bool) -> float:
    return OVERLAY_ALPHA if sounding else DIMMED_ALPHA


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
