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

import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from fnac.contract import NEGATIVE_KINDS, SPLITS
from fnac.errors import FnacError
from training.mediafiles import wav_bytes, write_mp4
from training.scenes import render_scene
from training.sounds import plain_noise, scene_audio

_SPLIT_CODE = {"train": 1, "val": 2, "test": 3}
SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "ring", "cross", "star", "bowtie")
PATTERNS = ("solid", "hstripes", "vstripes", "diagonal", "checker", "dots")
RHYTHMS = ("steady", "tremolo", "pulses", "plucks")
TIMBRES = ("saw", "odd", "formant")
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


class SynthError(FnacError, ValueError):
    """Knobs that cannot make a benchmark (too few classes for the distractors, an odd image size, ...)."""


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
            raise SynthError(f"distractors must be (min, max) with 0 ≤ min ≤ max, got {self.distractors}")
        # distractors are of classes other than the sounding one, all distinct; off-screen needs one more
        need = hi + 1 + (1 if self.negatives else 0)
        if self.n_classes < need:
            raise SynthError(
                f"n_classes={self.n_classes} is too few for up to {hi} distractors"
                f"{' and an off-screen class' if self.negatives else ''}: need at least {need}"
            )
        if self.image_size < 16 or self.image_size % 2:
            raise SynthError(
                f"image_size must be an even number ≥ 16 (H.264 needs even sizes), got {self.image_size}"
            )
        if not 0 < self.area_range[0] < self.area_range[1] <= 1:
            raise SynthError(f"area_range must satisfy 0 < min < max ≤ 1, got {self.area_range}")


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
    n_classes: int = SynthConfig.n_classes,
    n_train: int = SynthConfig.n_train,
    n_val: int = SynthConfig.n_val,
    n_test: int = SynthConfig.n_test,
    image_size: int = SynthConfig.image_size,
    sample_rate: int = SynthConfig.sample_rate,
    clip_seconds: float = SynthConfig.clip_seconds,
    seed: int = SynthConfig.seed,
    distractors: tuple[int, int] | int | None = None,
    area_range: tuple[float, float] | None = None,
    area_beta: tuple[float, float] | None = None,
    snr_db: tuple[float, float] = SynthConfig.snr_db,
    mp4_clips: int = SynthConfig.mp4_clips,
    negatives: bool = SynthConfig.negatives,
    workers: int = SynthConfig.workers,
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
        raise SynthError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
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
# Command line (`fnac synth`)


def add_arguments(p) -> None:
    p.add_argument(
        "-o", "--output", required=True, help="directory to write (created; existing files are replaced)"
    )
    p.add_argument(
        "--classes",
        type=int,
        default=SynthConfig.n_classes,
        help="object classes K; fewer ⇒ more in-batch false negatives (default %(default)s)",
    )
    p.add_argument(
        "--train", type=int, default=SynthConfig.n_train, help="training scenes (default %(default)s)"
    )
    p.add_argument(
        "--val",
        type=int,
        default=SynthConfig.n_val,
        help="validation scenes, for model selection (default %(default)s)",
    )
    p.add_argument("--test", type=int, default=SynthConfig.n_test, help="test scenes (default %(default)s)")
    p.add_argument(
        "--image-size",
        type=int,
        default=SynthConfig.image_size,
        help="frame side in pixels, even (default %(default)s)",
    )
    p.add_argument(
        "--sample-rate",
        type=int,
        default=SynthConfig.sample_rate,
        help="audio rate in Hz (default %(default)s)",
    )
    p.add_argument(
        "--clip-seconds",
        type=float,
        default=SynthConfig.clip_seconds,
        help="audio length per scene (default %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=SynthConfig.seed,
        help="the whole dataset is a function of the knobs and this (default %(default)s)",
    )
    p.add_argument(
        "--distractors",
        type=int,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="silent distractors per scene (default: the preset's; 1 3 for vggss, 2 4 for headroom)",
    )
    p.add_argument("--area-range", type=float, nargs=2, metavar=("LO", "HI"), help="box-area fraction bounds")
    p.add_argument(
        "--snr-db",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help=f"sound-to-noise ratio range in dB (default {SynthConfig.snr_db[0]:g} {SynthConfig.snr_db[1]:g})",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="vggss: VGG-SS box sizes (default); headroom: sizes where localization decides the score; "
        "--distractors / --area-range given as well override the preset's",
    )
    p.add_argument(
        "--mp4-clips",
        type=int,
        default=SynthConfig.mp4_clips,
        help="also write N test scenes as H.264+AAC clips/<id>.mp4 (default %(default)s)",
    )
    p.add_argument("--no-negatives", action="store_true", help="skip negatives/{silence,noise,offscreen}")
    p.add_argument(
        "--workers",
        type=int,
        default=SynthConfig.workers,
        help="processes; output bytes do not depend on it (default %(default)s)",
    )
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
        from training.priors import evaluate_priors

        priors = evaluate_priors(args.output)
        _write_json(Path(args.output) / "priors.json", priors)
        for name, summary in priors.items():
            if isinstance(summary, dict):
                print(
                    f"prior {name}: AP50 {summary['ap50']:.4f}  mean cIoU {summary['mean_ciou']:.4f}  AUC {summary['auc']:.4f}"
                )
    return 0
