"""The pictures of the synthetic benchmark (`fnac synth`): textured backgrounds and objects of each class's shape,
pattern and colours, placed with VGG-SS-like sizes and drawn in painter's order, with tight boxes."""

from __future__ import annotations

import colorsys
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from training.synth import SynthConfig


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1)))


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shape as an implicit function of box coordinates u, v ∈ [-1, 1] (v grows downwards)."""
    if shape == "ellipse":
        return u**2 + v**2 <= 1
    if shape == "rectangle":
        return np.ones_like(u, dtype=bool)
    if shape == "triangle":
        return np.abs(u) <= (v + 1) / 2
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    if shape == "ring":
        r2 = u**2 + v**2
        return (r2 <= 1) & (r2 >= 0.36)
    if shape == "cross":
        return (np.abs(u) <= 0.34) | (np.abs(v) <= 0.34)
    if shape == "star":
        r = np.hypot(u, v)
        theta = np.arctan2(v, u)
        return r <= 0.45 + 0.55 * np.abs(np.cos(2.5 * theta))
    if shape == "bowtie":
        return np.abs(v) <= np.abs(u) + 0.15
    raise ValueError(f"unknown shape {shape!r}")


def _pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """Where the secondary colour goes; 4 periods across the object so it scales with size."""
    periods = 4.0
    if pattern == "solid":
        return np.zeros_like(u, dtype=bool)
    if pattern == "hstripes":
        return np.sin(np.pi * periods * (v + phase)) > 0
    if pattern == "vstripes":
        return np.sin(np.pi * periods * (u + phase)) > 0
    if pattern == "diagonal":
        return np.sin(np.pi * periods * (u + v + phase) / 1.4) > 0
    if pattern == "checker":
        return (np.sin(np.pi * periods * u / 2 + phase) > 0) ^ (np.sin(np.pi * periods * v / 2) > 0)
    if pattern == "dots":
        cu = np.mod(u * periods / 2 + 1 + phase, 1.0) - 0.5
        cv = np.mod(v * periods / 2 + 1, 1.0) - 0.5
        return cu**2 + cv**2 <= 0.09
    raise ValueError(f"unknown pattern {pattern!r}")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Gradient, smooth noise texture or both; muted colours so objects stand out but not trivially."""
    coords = np.linspace(0.0, 1.0, size)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    c0 = _hsv(rng.random(), rng.uniform(0.05, 0.45), rng.uniform(0.25, 0.9))
    c1 = _hsv(rng.random(), rng.uniform(0.05, 0.45), rng.uniform(0.25, 0.9))
    kind = rng.integers(3)
    if kind in (0, 2):  # linear gradient in a random direction
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    else:
        ramp = np.full((size, size), 0.5)
    if kind in (1, 2):  # smooth value noise: a coarse random grid, bilinearly enlarged
        cells = int(rng.integers(3, 9))
        grid = rng.random((cells + 1, cells + 1))
        pos = np.linspace(0, cells, size)
        i0 = np.minimum(pos.astype(int), cells - 1)
        f = pos - i0
        rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
        noise = rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]
        ramp = 0.5 * ramp + 0.5 * noise if kind == 2 else noise
    return c0[None, None, :] * (1 - ramp[..., None]) + c1[None, None, :] * ramp[..., None]


def _sample_box(rng: np.random.Generator, cfg: SynthConfig) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1), end-exclusive, with VGG-SS-like area and aspect, anywhere in the frame."""
    size = cfg.image_size
    area = float(np.clip(rng.beta(*cfg.area_beta), *cfg.area_range))
    aspect = float(np.exp(rng.normal(0.0, cfg.log_aspect_sd)))
    w, h = np.sqrt(area * aspect), np.sqrt(area / aspect)
    if w > 1:
        w, h = 1.0, area
    if h > 1:
        w, h = area, 1.0
    wp, hp = max(round(w * size), 6), max(round(h * size), 6)
    x0 = int(rng.integers(0, size - wp + 1))
    y0 = int(rng.integers(0, size - hp + 1))
    return x0, y0, x0 + wp, y0 + hp


def _object_pixels(cls: dict, box: tuple[int, int, int, int], size: int, phase: float):
    """(shape mask, secondary-colour mask) for an object of class ``cls`` filling the pixel ``box``."""
    x0, y0, x1, y1 = box
    xs = (np.arange(x0, x1) + 0.5 - (x0 + x1) / 2) / ((x1 - x0) / 2)
    ys = (np.arange(y0, y1) + 0.5 - (y0 + y1) / 2) / ((y1 - y0) / 2)
    v, u = np.meshgrid(ys, xs, indexing="ij")
    return _shape_mask(cls["shape"], u, v), _pattern_mask(cls["pattern"], u, v, phase)


def _tight_box(mask: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    x0, y0 = box[0], box[1]
    return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1


def render_scene(
    rng: np.random.Generator,
    cfg: SynthConfig,
    sounding_class: int,
    distractor_classes: list[int],
    return_masks: bool = False,
):
    """Draw a scene; returns (uint8 image H×W×3, objects list with normalised boxes, sounding first).

    With ``return_masks`` a third item lists, per returned object, its full (unoccluded) boolean shape mask
    over the frame, and a fourth is the label map of which object each pixel shows (-1: background).
    """
    size = cfg.image_size
    classes = cfg.classes
    image = _background(rng, size)
    wanted = [(sounding_class, True)] + [(k, False) for k in distractor_classes]
    objects = []
    for k, sounding in wanted:
        cls = classes[k]
        box = _sample_box(rng, cfg)
        colour1 = _hsv(
            cls["hue"] + rng.normal(0, cfg.hue_jitter), rng.uniform(0.65, 1.0), rng.uniform(0.6, 1.0)
        )
        colour2 = _hsv(
            cls["hue2"] + rng.normal(0, cfg.hue_jitter), rng.uniform(0.5, 1.0), rng.uniform(0.3, 0.8)
        )
        shape, secondary = _object_pixels(cls, box, size, float(rng.random()))
        objects.append(
            {
                "class_index": k,
                "sounding": sounding,
                "box": box,
                "shape_mask": shape,
                "secondary": secondary,
                "colours": (colour1, colour2),
                "area": float(shape.sum()),
            }
        )
    # Painter's order by size (large at the back), independent of which object sounds. Distractors that would
    # hide too much of the sounding object are re-placed (a few tries) or dropped.
    sounding_obj = objects[0]
    kept = [sounding_obj]
    for obj in objects[1:]:
        for _ in range(12):
            if _visible_fraction(sounding_obj, [*kept, obj], size) >= cfg.min_visible:
                kept.append(obj)
                break
            box = _sample_box(rng, cfg)
            shape, secondary = _object_pixels(cfg.classes[obj["class_index"]], box, size, float(rng.random()))
            obj.update(box=box, shape_mask=shape, secondary=secondary, area=float(shape.sum()))
    kept.sort(key=lambda o: -o["area"])
    for obj in kept:
        x0, y0, x1, y1 = obj["box"]
        region = image[y0:y1, x0:x1]
        colour1, colour2 = obj["colours"]
        paint = np.where(obj["secondary"][..., None], colour2[None, None, :], colour1[None, None, :])
        region[obj["shape_mask"]] = paint[obj["shape_mask"]]
    image = image + rng.normal(0, 3.0 / 255, image.shape)  # sensor noise
    pixels = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    records = []
    for obj in [sounding_obj] + [o for o in kept if o is not sounding_obj]:
        x0, y0, x1, y1 = _tight_box(obj["shape_mask"], obj["box"])
        k = obj["class_index"]
        records.append(
            {
                "class": classes[k]["name"],
                "class_index": k,
                "bbox": [x0 / size, y0 / size, x1 / size, y1 / size],
                "bbox_px": [x0, y0, x1, y1],
                "area": round((x1 - x0) * (y1 - y0) / size**2, 5),
                "sounding": obj["sounding"],
                "draw_order": kept.index(obj),
            }
        )
    if not return_masks:
        return pixels, records
    ordered = [sounding_obj] + [o for o in kept if o is not sounding_obj]
    masks, labels = [], np.full((size, size), -1, dtype=np.int32)
    for obj in ordered:
        full = np.zeros((size, size), dtype=bool)
        x0, y0, x1, y1 = obj["box"]
        full[y0:y1, x0:x1] = obj["shape_mask"]
        masks.append(full)
    for obj in kept:  # painter's order, as drawn
        labels[masks[ordered.index(obj)]] = ordered.index(obj)
    return pixels, records, masks, labels


def _visible_fraction(target: dict, objects: list[dict], size: int) -> float:
    """Fraction of ``target``'s pixels not covered by larger-drawn-later objects, in painter's order by size."""
    canvas = np.full((size, size), -1, dtype=np.int32)
    order = sorted(range(len(objects)), key=lambda i: -objects[i]["area"])
    for i in order:
        x0, y0, x1, y1 = objects[i]["box"]
        region = canvas[y0:y1, x0:x1]
        region[objects[i]["shape_mask"]] = i
    index = next(i for i, o in enumerate(objects) if o is target)
    return float((canvas == index).sum()) / max(target["area"], 1.0)
