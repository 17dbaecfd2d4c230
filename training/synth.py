"""``fnac synth``: a deterministic "sounding objects" benchmark in the VGG-SS layout.

K object classes, each with a visual identity (shape + two-colour texture pattern + hue) and a sound identity
(harmonic tone: class fundamental, harmonic profile family, rhythm family). A scene is one sounding object plus
silent distractors of *other* classes on a textured background; its audio is the sounding class's sound plus
noise. Sizes follow the measured VGG-SS box-area distribution (the protocol's median threshold always predicts
about half the image, so small-only objects would make AP50 meaningless); sizes, positions and draw order are
independent of which object sounds, so audio-free priors (centre, largest object) stay well below what a model
that listens can reach.

Layout written under ``out_dir``::

    frames/<id>.jpg           audio/<id>.wav (16-bit PCM mono)     all splits
    splits/{train,val,test}.txt
    vggss.json                VGG-SS format ({"file", "class", "bbox"}) for the test split
    vggss_val.json            the same for the validation split (model selection)
    annotations.json          every split: sounding + distractor boxes with classes, audio parameters
    negatives/{silence,noise,offscreen}/<id>.wav   val and test ids; noise = white, uniform or pink noise
                              from -40 dBFS to full-scale hiss; offscreen = a class absent from the picture
    negatives/offscreen.json  {id: class played}
    clips/<id>.mp4            optional, H.264 + AAC, the test scene (constant frame) with its sound
    meta.json, README.md      every knob, the seed, class table, timing

Everything is a pure function of the knobs and the seed: each sample draws from its own
``np.random.default_rng([seed, split, index])``, so output bytes do not depend on ``workers``.
"""

from __future__ import annotations

import colorsys
import io
import json
import time
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
_SPLIT_CODE = {"train": 1, "val": 2, "test": 3}
SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "ring", "cross", "star", "bowtie")
PATTERNS = ("solid", "hstripes", "vstripes", "diagonal", "checker", "dots")
RHYTHMS = ("steady", "tremolo", "pulses", "plucks")
TIMBRES = ("saw", "odd", "formant")
NEGATIVE_KINDS = ("silence", "noise", "offscreen")
# Measured on the real vggss.json (5,158 entries): the union of a sample's boxes covers a fraction of the
# 224×224 grid with quantiles 5%: 0.033, 25%: 0.121, 50%: 0.253, 75%: 0.463, 95%: 0.780 (mean 0.312).
# Beta(1, 2.2) has 0.023 / 0.123 / 0.270 / 0.467 / 0.744 — close, and is the default size law.
VGGSS_AREA_QUANTILES = {0.05: 0.033, 0.25: 0.121, 0.5: 0.253, 0.75: 0.463, 0.95: 0.780}
# Named knob sets. "vggss" (default) matches VGG-SS sizes, and with them its structure: on 600 test scenes the
# centre prior scores AP50 ≈ 0.36 and a perfect localizer ≈ 0.53 (real VGG-SS boxes: 0.34 and 0.50), because
# the median threshold caps small objects and hands large ones to any central guess. "headroom" concentrates
# sizes where localization decides the score (priors ≈ 0.37, perfect localizer ≈ 0.69): use it where a
# model-vs-prior gap must be measurable. It needs n_classes ≥ 6 (4 distractors + off-screen class).
PRESETS = {
    "vggss": {},
    "headroom": {"area_beta": (4.0, 8.0), "area_range": (0.15, 0.55), "distractors": (2, 4)},
}


@dataclass
class SynthConfig:
    """Every knob of the generator (all recorded in ``meta.json``)."""

    n_classes: int = 10
    n_train: int = 2000
    n_val: int = 200
    n_test: int = 500
    image_size: int = 128
    sample_rate: int = 16000
    clip_seconds: float = 3.0
    seed: int = 0
    distractors: tuple[int, int] = (1, 3)  # silent distractors per scene, uniform in [min, max]
    area_beta: tuple[float, float] = (1.0, 2.2)  # box-area fraction ~ Beta(a, b) ...
    area_range: tuple[float, float] = (0.02, 0.9)  # ... clipped to this range
    log_aspect_sd: float = 0.45  # box width/height ~ exp(N(0, sd)), as VGG-SS (quartiles 0.6 / 1.17)
    min_visible: float = 0.6  # the sounding object keeps at least this fraction of its pixels unoccluded
    hue_jitter: float = 0.03
    pitch_jitter_semitones: float = 0.25
    snr_db: tuple[float, float] = (5.0, 25.0)  # sound-to-noise ratio of the scene audio
    negatives: bool = True
    mp4_clips: int = 0
    mp4_fps: int = 10
    jpeg_quality: int = 90
    workers: int = 1
    classes: list = field(default_factory=list)  # filled in by make_synth

    def __post_init__(self):
        lo, hi = self.distractors
        if not 0 <= lo <= hi:
            raise ValueError(f"distractors must be (min, max) with 0 ≤ min ≤ max, got {self.distractors}")
        # distractors are of classes other than the sounding one, all distinct; off-screen needs one more
        need = hi + 1 + (1 if self.negatives else 0)
        if self.n_classes < need:
            raise ValueError(
                f"n_classes={self.n_classes} is too few for up to {hi} distractors"
                f"{' and an off-screen class' if self.negatives else ''}: need at least {need}"
            )
        if self.image_size < 16 or self.image_size % 2:
            raise ValueError(
                f"image_size must be an even number ≥ 16 (H.264 needs even sizes), got {self.image_size}"
            )
        if not 0 < self.area_range[0] < self.area_range[1] <= 1:
            raise ValueError(f"area_range must satisfy 0 < min < max ≤ 1, got {self.area_range}")


# ----------------------------------------------------------------------------------------------------------
# Class identities


def make_classes(n_classes: int, seed: int) -> list[dict]:
    """Visual + sound identity of each class, a pure function of (n_classes, seed)."""
    rng = np.random.default_rng([seed, 7919])
    combos = [(s, p) for p in range(len(PATTERNS)) for s in range(len(SHAPES))]
    order = rng.permutation(len(combos))
    # fundamentals spread over 3 octaves on a log grid, shuffled so pitch is unrelated to appearance
    f0_grid = 160.0 * 2 ** (3 * np.arange(n_classes) / max(n_classes, 1))
    f0_grid = f0_grid[rng.permutation(n_classes)]
    classes = []
    for k in range(n_classes):
        shape, pattern = combos[order[k % len(combos)]]
        hue = (0.11 + k * 0.618034) % 1.0  # golden-ratio spacing keeps hues of nearby classes apart
        classes.append(
            {
                "index": k,
                "name": f"{SHAPES[shape]}-{PATTERNS[pattern]}-{k:02d}",
                "shape": SHAPES[shape],
                "pattern": PATTERNS[pattern],
                "hue": round(hue, 4),
                "hue2": round((hue + 0.35 + 0.3 * rng.random()) % 1.0, 4),
                "f0": round(float(f0_grid[k]), 2),
                "timbre": TIMBRES[k % len(TIMBRES)],
                "rhythm": RHYTHMS[(k // len(TIMBRES)) % len(RHYTHMS)],
                "rate_hz": round(float(rng.uniform(1.5, 6.0)), 2),
                "n_harmonics": int(rng.integers(4, 9)),
            }
        )
    return classes


# ----------------------------------------------------------------------------------------------------------
# Pictures


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


# ----------------------------------------------------------------------------------------------------------
# Sounds


def class_sound(
    rng: np.random.Generator, cls: dict, cfg: SynthConfig, n_samples: int
) -> tuple[np.ndarray, dict]:
    """One instance of a class's sound (float64, peak 1): harmonic tone × rhythm envelope, per-sample jitter."""
    sr = cfg.sample_rate
    t = np.arange(n_samples) / sr
    f0 = cls["f0"] * 2 ** (rng.normal(0, cfg.pitch_jitter_semitones) / 12)
    vibrato = 1 + 0.004 * np.sin(2 * np.pi * rng.uniform(4, 6) * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * f0 * np.cumsum(vibrato) / sr
    n = np.arange(1, cls["n_harmonics"] + 1)
    if cls["timbre"] == "saw":
        amps = 1 / n
    elif cls["timbre"] == "odd":
        amps = np.where(n % 2 == 1, 1 / n, 0.0)
    else:  # formant: energy peaks around the 3rd harmonic
        amps = np.exp(-0.5 * ((n - 3) / 1.2) ** 2)
    amps = amps * (n * f0 < sr / 2 * 0.9)  # no aliasing
    amps = amps * np.exp(rng.normal(0, 0.1, amps.shape))
    tone = amps @ np.sin(np.outer(n, phase) + rng.uniform(0, 2 * np.pi, (n.size, 1)))
    rate = cls["rate_hz"] * rng.uniform(0.9, 1.1)
    beat = (rate * t + rng.random()) % 1.0  # position inside the current beat, 0..1
    if cls["rhythm"] == "steady":
        envelope = np.ones_like(t)
    elif cls["rhythm"] == "tremolo":
        envelope = 0.55 + 0.45 * np.sin(2 * np.pi * beat)
    elif cls["rhythm"] == "pulses":
        envelope = np.clip((0.5 - np.abs(beat - 0.25)) * 20, 0, 1) * (beat < 0.5) + 0.05
    else:  # plucks: sharp attack, exponential decay each beat
        envelope = np.exp(-beat * 6.0) * np.clip(beat * 200, 0, 1)
    sound = tone * envelope
    peak = np.abs(sound).max()
    return sound / max(peak, 1e-9), {"f0": round(float(f0), 2), "rate_hz": round(float(rate), 3)}


def scene_audio(rng: np.random.Generator, cls: dict, cfg: SynthConfig) -> tuple[np.ndarray, dict]:
    """Sound of the class + white noise at a random SNR, scaled to a random peak level in [0.3, 0.9]."""
    n_samples = round(cfg.sample_rate * cfg.clip_seconds)
    sound, params = class_sound(rng, cls, cfg, n_samples)
    snr_db = rng.uniform(*cfg.snr_db)
    noise = rng.normal(0, 1, n_samples) * np.sqrt(np.mean(sound**2) / 10 ** (snr_db / 10))
    mix = sound + noise
    mix = mix / np.abs(mix).max() * rng.uniform(0.3, 0.9)
    return mix, {**params, "snr_db": round(float(snr_db), 2)}


NOISE_COLOURS = ("white", "uniform", "pink")
NOISE_DBFS = (-40.0, -5.0)  # RMS level range of the noise negatives: barely audible to full-scale hiss


def unit_noise(rng: np.random.Generator, colour: str, shape: int | tuple[int, ...]) -> np.ndarray:
    """Noise of one of NOISE_COLOURS at unit RMS along the last axis: white (Gaussian), uniform, or pink (white
    noise's spectrum shaped by 1/sqrt(f), so power falls 3 dB per octave; no DC)."""
    if colour == "uniform":
        noise = rng.uniform(-1, 1, shape)
    elif colour == "pink":
        n_samples = shape if isinstance(shape, int) else shape[-1]
        spectrum = np.fft.rfft(rng.normal(0, 1, shape), axis=-1)
        spectrum[..., 1:] /= np.sqrt(np.arange(1, spectrum.shape[-1]))
        spectrum[..., 0] = 0
        noise = np.fft.irfft(spectrum, n_samples, axis=-1)
    elif colour == "white":
        noise = rng.normal(0, 1, shape)
    else:
        raise ValueError(f"unknown noise colour {colour!r}; expected one of {NOISE_COLOURS}")
    rms = np.sqrt(np.mean(noise**2, axis=-1, keepdims=True))
    return noise / np.maximum(rms, 1e-12)


def plain_noise(rng: np.random.Generator, n_samples: int) -> tuple[np.ndarray, dict]:
    """A "plain noise" negative: white (Gaussian), uniform or pink (1/f power) noise at an RMS level drawn
    uniformly in dB from NOISE_DBFS, clipped to [-1, 1]; the parameters record the level after clipping.

    The level spans the whole range users send, up to full-scale hiss, because a calibrated `sounding`
    threshold only holds for the levels it was calibrated on.
    """
    colour = NOISE_COLOURS[int(rng.integers(len(NOISE_COLOURS)))]
    level_dbfs = rng.uniform(*NOISE_DBFS)
    noise = np.clip(unit_noise(rng, colour, n_samples) * 10 ** (level_dbfs / 20), -1, 1)
    played_dbfs = 20 * np.log10(np.sqrt(np.mean(noise**2)))  # clipping takes a little off the loudest
    return noise, {"colour": colour, "level_dbfs": round(float(played_dbfs), 2)}


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM mono WAV of a float waveform in [-1, 1]."""
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(float32 mono waveform in [-1, 1], sample rate) of a 16-bit PCM WAV written by this module."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        channels, rate = w.getnchannels(), w.getframerate()
    audio = frames.reshape(-1, channels).mean(axis=1) / 32768.0
    return audio.astype(np.float32), rate


def write_mp4(
    path: str | Path, image: np.ndarray, audio: np.ndarray, sample_rate: int, fps: int = 10
) -> Path:
    """An H.264 + AAC clip: the (constant) frame for as long as the audio lasts."""
    import av

    path = Path(path)
    seconds = audio.size / sample_rate
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = image.shape[1], image.shape[0]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "23", "preset": "veryfast", "threads": "1"}
        audio_stream = container.add_stream("aac", rate=sample_rate)
        audio_stream.layout = "mono"
        for _ in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        samples = np.clip(audio, -1, 1).astype(np.float32)
        chunk = 1024
        for start in range(0, samples.size, chunk):
            piece = samples[start : start + chunk][None, :]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            for packet in audio_stream.encode(frame):
                container.mux(packet)
        for packet in audio_stream.encode():
            container.mux(packet)
    return path


# ----------------------------------------------------------------------------------------------------------
# Generation


def _sample_id(split: str, index: int) -> str:
    return f"{split}_{index:06d}"


def _generate_one(cfg: SynthConfig, out_dir: Path, split: str, index: int) -> dict:
    rng = np.random.default_rng([cfg.seed, _SPLIT_CODE[split], index])
    sample_id = _sample_id(split, index)
    k = cfg.n_classes
    sounding = int(rng.integers(k))
    n_distractors = int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1))
    others = [c for c in range(k) if c != sounding]
    distractors = [int(c) for c in rng.choice(others, size=n_distractors, replace=False)]
    image, objects = render_scene(rng, cfg, sounding, distractors)
    audio, audio_params = scene_audio(rng, cfg.classes[sounding], cfg)

    from PIL import Image

    Image.fromarray(image).save(out_dir / "frames" / f"{sample_id}.jpg", quality=cfg.jpeg_quality)
    (out_dir / "audio" / f"{sample_id}.wav").write_bytes(wav_bytes(audio, cfg.sample_rate))
    record = {
        "file": sample_id,
        "split": split,
        "class": cfg.classes[sounding]["name"],
        "class_index": sounding,
        "bbox": [objects[0]["bbox"]],
        "objects": objects,
        "audio": {"class_index": sounding, **audio_params},
    }
    if split in ("val", "test") and cfg.negatives:  # val: calibration, test: reporting
        neg_rng = np.random.default_rng([cfg.seed, _SPLIT_CODE[split], index, 17])
        n = audio.size
        negatives = out_dir / "negatives"
        (negatives / "silence" / f"{sample_id}.wav").write_bytes(wav_bytes(np.zeros(n), cfg.sample_rate))
        noise, noise_params = plain_noise(np.random.default_rng([cfg.seed, _SPLIT_CODE[split], index, 18]), n)
        (negatives / "noise" / f"{sample_id}.wav").write_bytes(wav_bytes(noise, cfg.sample_rate))
        record["noise"] = noise_params
        present = {o["class_index"] for o in objects}
        absent = [c for c in range(k) if c not in present]
        offscreen = int(neg_rng.choice(absent))
        off_audio, _ = scene_audio(neg_rng, cfg.classes[offscreen], cfg)
        (negatives / "offscreen" / f"{sample_id}.wav").write_bytes(wav_bytes(off_audio, cfg.sample_rate))
        record["offscreen_class_index"] = offscreen
    if split == "test" and index < cfg.mp4_clips:
        write_mp4(out_dir / "clips" / f"{sample_id}.mp4", image, audio, cfg.sample_rate, cfg.mp4_fps)
    return record


def _generate_chunk(args: tuple) -> list[dict]:
    cfg, out_dir, jobs = args
    return [_generate_one(cfg, out_dir, split, index) for split, index in jobs]


def _readme(cfg: SynthConfig) -> str:
    return (
        "# Synthetic sounding-objects benchmark (fnac synth)\n\n"
        f"Seed {cfg.seed}; {cfg.n_classes} classes; splits train/val/test = "
        f"{cfg.n_train}/{cfg.n_val}/{cfg.n_test}; {cfg.image_size}px frames; "
        f"{cfg.clip_seconds}s audio at {cfg.sample_rate} Hz.\n\n"
        "- `frames/<id>.jpg`, `audio/<id>.wav`: every split (16-bit PCM mono).\n"
        "- `splits/{train,val,test}.txt`: ids.\n"
        "- `vggss.json` (test) and `vggss_val.json` (val): VGG-SS format, the sounding object's box.\n"
        "- `annotations.json`: all splits, sounding and distractor boxes with classes (false-negative "
        "analysis, largest-object prior).\n"
        "- `negatives/{silence,noise,offscreen}/<id>.wav`: negative audio for val and test ids. Noise is "
        "white, uniform or pink at an RMS level from -40 dBFS to full-scale hiss (`noise` in "
        "annotations.json); `negatives/offscreen.json` names the class played (absent from the picture).\n"
        "- `clips/<id>.mp4`: H.264 + AAC clips of the first test scenes (constant frame).\n"
        "- `meta.json`: every knob, the class table and the generation time.\n"
    )


def make_synth(
    out_dir: str | Path,
    *,
    n_classes: int = 10,
    n_train: int = 2000,
    n_val: int = 200,
    n_test: int = 500,
    image_size: int = 128,
    sample_rate: int = 16000,
    clip_seconds: float = 3.0,
    seed: int = 0,
    distractors: tuple[int, int] | int | None = None,
    area_range: tuple[float, float] | None = None,
    area_beta: tuple[float, float] | None = None,
    snr_db: tuple[float, float] = (5.0, 25.0),
    mp4_clips: int = 0,
    negatives: bool = True,
    workers: int = 1,
    progress: bool = False,
    preset: str | None = None,
    **extra,
) -> dict:
    """Generate the benchmark under ``out_dir`` (see the module docstring for the layout); returns ``meta``.

    ``distractors`` is ``(min, max)`` silent objects per scene (an int d means ``(0, d)``); sizes follow
    Beta(``area_beta``) clipped to ``area_range`` (fractions of the frame); ``workers`` > 1 renders in
    processes without changing any output byte. ``preset`` (a key of :data:`PRESETS`) sets the size and
    distractor knobs that are not passed explicitly (an explicit value always wins); the rest take the
    defaults (1-3 distractors, VGG-SS-like sizes). Other :class:`SynthConfig` fields can be passed by name.
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    defaults = {f.name: f.default for f in fields(SynthConfig)}
    knobs = {**defaults, **PRESETS.get(preset or "vggss", {})}
    distractors = knobs["distractors"] if distractors is None else distractors
    area_range = knobs["area_range"] if area_range is None else area_range
    area_beta = knobs["area_beta"] if area_beta is None else area_beta
    if isinstance(distractors, int):
        distractors = (0, distractors)
    cfg = SynthConfig(
        n_classes=n_classes, n_train=n_train, n_val=n_val, n_test=n_test, image_size=image_size,
        sample_rate=sample_rate, clip_seconds=clip_seconds, seed=seed, distractors=tuple(distractors),
        area_range=tuple(area_range), area_beta=tuple(area_beta), snr_db=tuple(snr_db), mp4_clips=mp4_clips,
        negatives=negatives, workers=workers, **extra,
    )  # fmt: skip
    cfg.classes = make_classes(cfg.n_classes, cfg.seed)
    out = Path(out_dir)
    for sub in ("frames", "audio", "splits"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if negatives:
        for kind in NEGATIVE_KINDS:
            (out / "negatives" / kind).mkdir(parents=True, exist_ok=True)
    if mp4_clips:
        (out / "clips").mkdir(parents=True, exist_ok=True)

    sizes = {"train": n_train, "val": n_val, "test": n_test}
    jobs = [(split, i) for split in SPLITS for i in range(sizes[split])]
    started = time.perf_counter()
    chunk = 64
    chunks = [(cfg, out, jobs[i : i + chunk]) for i in range(0, len(jobs), chunk)]
    records: list[dict] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="synth", unit="scene")
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for part in pool.map(_generate_chunk, chunks):
                records.extend(part)
                if bar:
                    bar.update(len(part))
    else:
        for args in chunks:
            part = _generate_chunk(args)
            records.extend(part)
            if bar:
                bar.update(len(part))
    if bar:
        bar.close()
    elapsed = time.perf_counter() - started

    for split in SPLITS:
        ids = [r["file"] for r in records if r["split"] == split]
        (out / "splits" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))

    def vggss(split):
        return [
            {"file": r["file"], "class": r["class"], "bbox": r["bbox"]}
            for r in records
            if r["split"] == split
        ]

    _write_json(out / "vggss.json", vggss("test"))
    _write_json(out / "vggss_val.json", vggss("val"))
    _write_json(out / "annotations.json", {"classes": cfg.classes, "samples": records})
    if negatives:
        offscreen = {
            r["file"]: cfg.classes[r["offscreen_class_index"]]["name"]
            for r in records
            if r["split"] in ("val", "test")
        }
        _write_json(out / "negatives" / "offscreen.json", offscreen)
    knobs = asdict(cfg)
    knobs.pop("classes")
    knobs.pop("workers")  # changes speed, never a byte of output
    areas = np.array([r["objects"][0]["area"] for r in records])
    meta = {
        "format": "fnac-synth/1",
        "preset": preset or "vggss",
        "config": knobs,
        "classes": cfg.classes,
        "counts": {split: sizes[split] for split in SPLITS},
        "sounding_box_area_quantiles": {
            str(q): round(float(np.quantile(areas, q)), 4) for q in (0.05, 0.25, 0.5, 0.75, 0.95)
        }
        if areas.size
        else {},
        "vggss_box_area_quantiles": {str(q): v for q, v in VGGSS_AREA_QUANTILES.items()},
    }
    _write_json(out / "meta.json", meta)
    (out / "README.md").write_text(_readme(cfg))
    # generation time is a measurement, not an output: it would break byte-for-byte determinism
    return {**meta, "generation_seconds": round(elapsed, 2)}


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


# ----------------------------------------------------------------------------------------------------------
# Audio-free priors ("does the benchmark leak the answer?")


def largest_object_box(sample: dict) -> list[float]:
    """Normalised box of the largest object in the picture (sounding or not), from ``annotations.json``."""
    return max(sample["objects"], key=lambda o: o["area"])["bbox"]


def prior_heatmaps(sample: dict, size: int = 224) -> dict[str, np.ndarray]:
    """Audio-free heatmaps of one annotated sample: centre box, centre Gaussian, largest object, and the
    oracle (the true box: the best any heatmap can do under the median threshold)."""
    from training.metrics import box_prior, centre_prior

    return {
        "centre_box": centre_prior(size, "box"),
        "centre_gaussian": centre_prior(size, "gaussian"),
        "largest_object": box_prior([largest_object_box(sample)], size),
        "oracle": box_prior(sample["bbox"], size),
    }


def evaluate_priors(data_dir: str | Path, split: str = "test", size: int = 224) -> dict:
    """AP50 / mean cIoU / AUC of the audio-free priors on a synth split, with the official protocol."""
    from training.annotations import load_synth_annotations
    from training.metrics import Evaluator, vggss_gt_map

    data = load_synth_annotations(Path(data_dir) / "annotations.json")
    samples = [s for s in data["samples"] if s["split"] == split]
    evaluators: dict[str, Evaluator] = {}
    largest_is_sounding = 0
    for sample in samples:
        gt = vggss_gt_map(sample["bbox"], size)
        for name, heatmap in prior_heatmaps(sample, size).items():
            evaluators.setdefault(name, Evaluator(size=size)).add(heatmap, gt, sample["file"])
        largest_is_sounding += max(sample["objects"], key=lambda o: o["area"])["sounding"]
    report = {name: ev.summary() for name, ev in evaluators.items()}
    report["largest_is_sounding_fraction"] = largest_is_sounding / max(len(samples), 1)
    report["split"] = split
    return report


# ----------------------------------------------------------------------------------------------------------
# Command line (`fnac synth`)


def add_arguments(p) -> None:
    p.add_argument(
        "-o", "--output", required=True, help="directory to write (created; existing files are replaced)"
    )
    p.add_argument(
        "--classes", type=int, default=10, help="object classes K; fewer ⇒ more in-batch false negatives"
    )
    p.add_argument("--train", type=int, default=2000, help="training scenes (default 2000)")
    p.add_argument(
        "--val", type=int, default=200, help="validation scenes, for model selection (default 200)"
    )
    p.add_argument("--test", type=int, default=500, help="test scenes (default 500)")
    p.add_argument("--image-size", type=int, default=128, help="frame side in pixels, even (default 128)")
    p.add_argument("--sample-rate", type=int, default=16000, help="audio rate in Hz (default 16000)")
    p.add_argument("--clip-seconds", type=float, default=3.0, help="audio length per scene (default 3.0)")
    p.add_argument(
        "--seed", type=int, default=0, help="the whole dataset is a function of the knobs and this"
    )
    p.add_argument(
        "--distractors", type=int, nargs=2, metavar=("MIN", "MAX"), help="silent distractors per scene"
    )
    p.add_argument("--area-range", type=float, nargs=2, metavar=("LO", "HI"), help="box-area fraction bounds")
    p.add_argument(
        "--snr-db", type=float, nargs=2, metavar=("LO", "HI"), help="sound-to-noise ratio range in dB"
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="vggss: VGG-SS box sizes (default); headroom: sizes where localization decides the score; "
        "--distractors / --area-range given as well override the preset's",
    )
    p.add_argument(
        "--mp4-clips", type=int, default=0, help="also write N test scenes as H.264+AAC clips/<id>.mp4"
    )
    p.add_argument("--no-negatives", action="store_true", help="skip negatives/{silence,noise,offscreen}")
    p.add_argument("--workers", type=int, default=1, help="processes (output bytes do not depend on it)")
    p.add_argument("--priors", action="store_true", help="also score the audio-free priors on the test split")


def run(args) -> int:
    extra = {
        key: tuple(value)
        for key, value in {
            "distractors": args.distractors,
            "area_range": args.area_range,
            "snr_db": args.snr_db,
        }.items()
        if value is not None
    }
    meta = make_synth(
        args.output,
        n_classes=args.classes,
        n_train=args.train,
        n_val=args.val,
        n_test=args.test,
        image_size=args.image_size,
        sample_rate=args.sample_rate,
        clip_seconds=args.clip_seconds,
        seed=args.seed,
        mp4_clips=args.mp4_clips,
        negatives=not args.no_negatives,
        workers=args.workers,
        progress=True,
        preset=args.preset,
        **extra,
    )
    total = args.train + args.val + args.test
    print(
        f"wrote {total} scenes ({args.classes} classes) to {args.output} in {meta['generation_seconds']:.1f} s"
    )
    if args.priors:
        priors = evaluate_priors(args.output)
        _write_json(Path(args.output) / "priors.json", priors)
        for name, summary in priors.items():
            if isinstance(summary, dict):
                print(
                    f"prior {name}: AP50 {summary['ap50']:.4f}  mean cIoU {summary['mean_ciou']:.4f}  AUC {summary['auc']:.4f}"
                )
    return 0
