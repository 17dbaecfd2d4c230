"""`fnac eval`: the official localization protocol on a dataset directory, for a checkpoint or an ONNX model.

Reports AP50 (the papers' "cIoU"), mean cIoU and AUC for the map the model serves, a centre-prior baseline
line, and — when the dataset carries negative-audio variants — how well the raw `score` separates real sounds
from silence, noise and off-screen sounds (AUROC), with an optional calibrated `sounding` threshold.

A model with object-guided localization (OGL) serves the fused map; the report then also gives the three rows
of the official test.py under `maps`: `av` (the audio-visual map alone), `obj` (the objectness map alone) and
`av_obj` (the fusion, equal to the top level).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from fnac import contract, postprocess
from fnac.contract import NEGATIVE_KINDS
from training import metrics
from training.annotations import load_flickr_annotations, load_vggss_json
from training.eval_report import print_summary, write_outputs
from training.eval_sounding import negatives_report, store_threshold
from training.layout import DatasetError, frames_and_audio, load_pair
from training.predictor import InputSpec, Predictor

log = logging.getLogger(__name__)


def official_maps(
    heatmap: np.ndarray,
    objectness: np.ndarray | None,
    alpha: float | None,
    interpolation: str,
    size: int = metrics.EVAL_SIZE,
) -> dict[str, np.ndarray]:
    """The maps the official test.py scores, size×size in [0, 1]: `av` (upsampled by `interpolation`,
    normalised) and, with an objectness map, `obj` (always bilinear with align_corners=True, normalised) and
    `av_obj` = normalise(α·av + (1−α)·obj)."""
    maps = {"av": metrics.prepare_heatmap(heatmap, size, interpolation)}
    if objectness is not None:
        maps["obj"] = metrics.prepare_heatmap(objectness, size, "bilinear")
        maps["av_obj"] = postprocess.fuse_objectness(maps["av"], maps["obj"], alpha)
    return maps


def ground_truth(
    root: Path, size: int = metrics.EVAL_SIZE, split: str = "test"
) -> tuple[str, dict[str, np.ndarray]]:
    """(layout name, {id: gt map}) for a VGG-SS style (vggss.json) or Flickr-SoundNet (Annotations/) dataset.
    `split="val"` reads the validation annotations `vggss_val.json` (written by `fnac synth`)."""
    if split not in ("test", "val"):
        raise DatasetError(f"split must be 'test' or 'val', not {split!r}")
    if split == "val":
        if not (root / "vggss_val.json").is_file():
            raise DatasetError(
                f"{root}: no vggss_val.json, so there are no validation annotations to evaluate"
            )
        entries = load_vggss_json(root / "vggss_val.json")
        return "vggss", {k: metrics.vggss_gt_map(e.boxes, size) for k, e in entries.items()}
    if (root / "vggss.json").is_file():
        entries = load_vggss_json(root / "vggss.json")
        return "vggss", {k: metrics.vggss_gt_map(e.boxes, size) for k, e in entries.items()}
    if (root / "Annotations").is_dir():
        boxes = load_flickr_annotations(root / "Annotations")
        return "flickr", {k: metrics.flickr_gt_map(b, size) for k, b in boxes.items()}
    raise DatasetError(f"{root}: no vggss.json and no Annotations/ folder; not an evaluation dataset")


def find_media(root: Path, ids) -> dict[str, tuple[Path, Path]]:
    """{id: (frame, audio)} of the `ids` that have both in the dataset at `root`."""
    frames, audio = frames_and_audio(root)
    return {i: (frames[i], audio[i]) for i in ids if i in frames and i in audio}


def _load_audio(path: Path, spec: InputSpec) -> np.ndarray:
    from fnac.media import decode_audio, fit_audio_window

    return fit_audio_window(decode_audio(path, sample_rate=spec.sample_rate, name=path.name), spec.n_samples)


def evaluate(
    model_path: str | Path,
    data: str | Path,
    *,
    interpolation: str = "bicubic",
    batch_size: int = 16,
    limit: int | None = None,
    negatives: bool = True,
    providers: list[str] | None = None,
    device: str | None = None,
    threads: int = 0,
    progress: bool = True,
    split: str = "test",
    silence_dbfs: float | None = None,
    calibration: str = "fpr",
    target_fpr: float = 0.05,
    ogl_weights: str | Path | None = None,
    ogl_alpha: float | None = None,
) -> tuple[dict, dict[str, metrics.Evaluator], metrics.Evaluator]:
    """Run the protocol; returns (report dict, {map name: evaluator}, evaluator of the centre prior).

    Map names: "av", and with OGL also "obj" and "av_obj"; the last is the served map, the report's top level.

    The served map is the audio-visual map, or with OGL (an ONNX model exported with an object branch, or a
    checkpoint with `ogl_weights`) the fused map; the report's `maps` then scores `av`, `obj` and `av_obj`.
    With negatives and a model that carries a `sounding_threshold`, the report also gives the fraction answered
    `sounding` for real sounds and each negative kind, by the service's rule (threshold and silence gate)."""
    from tqdm import tqdm

    from fnac.media import MediaError

    silence_dbfs = postprocess.SILENCE_DBFS if silence_dbfs is None else silence_dbfs

    root = Path(data)
    predictor = Predictor(model_path, providers, device, threads, ogl_weights, ogl_alpha)
    layout, gt_maps = ground_truth(root, split=split)
    media = find_media(root, gt_maps)
    ids = sorted(media)[:limit] if limit else sorted(media)
    if not ids:
        raise DatasetError(
            f"{root}: none of the {len(gt_maps)} annotated ids has both a frame and an audio file"
        )
    log.info("evaluating %d of %d annotated samples (%s layout)", len(ids), len(gt_maps), layout)

    # One evaluator per official row; each gets maps already at 224 px (Evaluator.add only re-normalises them,
    # which leaves a [0, 1] map unchanged), so OBJ is upsampled bilinearly whatever --interpolation says.
    map_names = ("av", "obj", "av_obj") if predictor.ogl_alpha is not None else ("av",)
    scored = {name: metrics.Evaluator(interpolation=interpolation) for name in map_names}
    served = scored[map_names[-1]]
    prior = metrics.Evaluator(interpolation=interpolation)
    centre = metrics.centre_prior(kind="gaussian")
    scores: dict[str, list[float]] = {"positive": []}
    levels: dict[str, list[float]] = {"positive": []}
    neg_dirs = {k: root / "negatives" / k for k in NEGATIVE_KINDS if (root / "negatives" / k).is_dir()}
    if negatives:
        scores.update({k: [] for k in neg_dirs})
        levels.update({k: [] for k in neg_dirs})
    failures: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(total=len(ids), desc="eval", unit="sample", disable=not progress)
    for first in range(0, len(ids), batch_size):
        chunk, images, audio = [], [], []
        for sample_id in ids[first : first + batch_size]:
            try:
                image, wave = load_pair(*media[sample_id], predictor.spec)
            except MediaError as exc:
                failures.append({"id": sample_id, "code": exc.code, "message": exc.message})
                log.warning("skipping %s: %s", sample_id, exc.message)
                continue
            chunk.append(sample_id)
            images.append(image)
            audio.append(wave)
        bar.update(len(ids[first : first + batch_size]))
        if not chunk:
            continue
        images_np, audio_np = np.stack(images), np.stack(audio)
        heatmaps, batch_scores, objectness = predictor.maps(images_np, audio_np)
        for i, sample_id in enumerate(chunk):
            maps = official_maps(
                heatmaps[i], None if objectness is None else objectness[i], predictor.ogl_alpha, interpolation
            )
            for name, evaluator in scored.items():
                evaluator.add(maps[name], gt_maps[sample_id], sample_id)
            prior.add(centre, gt_maps[sample_id], sample_id)
        scores["positive"] += [float(s) for s in batch_scores]
        levels["positive"] += [postprocess.audio_level_dbfs(w) for w in audio_np]
        for kind, folder in neg_dirs.items() if negatives else ():
            neg_audio = [(i, folder / f"{sample_id}.wav") for i, sample_id in enumerate(chunk)]
            neg_audio = [(i, p) for i, p in neg_audio if p.is_file()]
            if not neg_audio:
                continue
            waves = np.stack([_load_audio(p, predictor.spec) for _, p in neg_audio])
            _, neg_scores = predictor(images_np[[i for i, _ in neg_audio]], waves)
            scores[kind] += [float(s) for s in neg_scores]
            levels[kind] += [postprocess.audio_level_dbfs(w) for w in waves]
    bar.close()

    report = {
        **served.summary(),
        "served_map": map_names[-1],
        "model": predictor.name,
        "model_path": str(model_path),
        "data": str(root),
        "layout": layout,
        "split": split,
        "annotated": len(gt_maps),
        "evaluated": len(served),
        "failed": failures,
        "centre_prior": prior.summary(),
        "seconds": round(time.perf_counter() - start, 2),
    }
    if predictor.ogl_alpha is not None:
        report["ogl_alpha"] = predictor.ogl_alpha
        report["maps"] = {name: evaluator.summary() for name, evaluator in scored.items()}
        report["maps"]["obj"]["interpolation"] = "bilinear"  # align_corners=True, as the official test.py
    kinds = [kind for kind in neg_dirs if scores.get(kind)]  # negative kinds that were scored
    report.update(
        negatives_report(
            scores,
            levels,
            kinds,
            sounding_threshold=predictor.sounding_threshold,
            silence_dbfs=silence_dbfs,
            calibration=calibration,
            target_fpr=target_fpr,
        )
    )
    return report, scored, prior


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="fnac checkpoint (.pt) or exported model (.onnx)")
    p.add_argument(
        "--data", required=True, help="dataset directory (vggss.json or Annotations/, frames/, audio/)"
    )
    p.add_argument(
        "--report", required=True, help="report JSON to write; the success-rate curve PNG goes beside it"
    )
    p.add_argument(
        "--interpolation",
        choices=list(metrics.INTERPOLATIONS),
        default="bicubic",
        help="heatmap upsampling: bicubic (official train-time validation, default) or bilinear with "
        "align_corners=True (official test.py); recorded in the report",
    )
    p.add_argument(
        "--split",
        choices=["test", "val"],
        default="test",
        help="annotations to evaluate: test (vggss.json / Annotations/) or val (vggss_val.json, from fnac synth); "
        "calibrate --write-threshold on val, then report on test",
    )
    p.add_argument("--batch-size", type=int, default=16, help="samples per model call")
    p.add_argument("--limit", type=int, help="evaluate only the first N ids (sorted)")
    p.add_argument("--no-negatives", action="store_true", help="skip negative-audio metrics")
    p.add_argument(
        "--write-threshold",
        action="store_true",
        help="store the calibrated sounding threshold in the model file (calibrated on the negatives that pass "
        "the -60 dBFS silence gate; see --calibration)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --write-threshold: store the threshold even when it misses --target-fpr or no real sound "
        "reaches it",
    )
    p.add_argument(
        "--calibration",
        choices=["fpr", "youden"],
        default="fpr",
        help="fpr (default): the lowest threshold whose false-positive rate is at most --target-fpr on every "
        "negative kind (silence above the gate, noise, off-screen), so loud noise cannot hide behind easy "
        "off-screen sounds; youden: maximise TPR - FPR over all negatives pooled",
    )
    p.add_argument("--target-fpr", type=float, default=0.05, help="for --calibration fpr (default 0.05)")
    p.add_argument(
        "--ogl-weights",
        metavar="RESNET18.pth",
        help="evaluate a checkpoint with object-guided localization: a torchvision ResNet-18 ImageNet state "
        "dict (an ONNX model exported with --ogl-weights carries its own)",
    )
    p.add_argument("--ogl-alpha", type=float, help="OGL fusion weight of the audio-visual map (default 0.4)")
    p.add_argument("--providers", help="ONNX Runtime providers, comma separated (default: auto)")
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where a .pt checkpoint runs (default auto: cuda when torch sees it); an .onnx model follows "
        "--providers",
    )
    p.add_argument(
        "--threads",
        type=_non_negative_int,
        default=0,
        help="CPU threads for the model (default 0: all cores); give each of several evaluations running at "
        "once its share, or they slow each other down many times over",
    )


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def run(args: argparse.Namespace) -> int:
    providers = contract.parse_providers(args.providers)
    report, scored, prior = evaluate(
        args.model,
        args.data,
        interpolation=args.interpolation,
        batch_size=args.batch_size,
        limit=args.limit,
        negatives=not args.no_negatives,
        providers=providers,
        device=None if args.device == "auto" else args.device,
        threads=args.threads,
        split=args.split,
        calibration=args.calibration,
        target_fpr=args.target_fpr,
        ogl_weights=args.ogl_weights,
        ogl_alpha=args.ogl_alpha,
    )
    report_path = Path(args.report)
    plot = write_outputs(report_path, report, scored, prior, args.data)
    print_summary(report)
    if args.write_threshold:
        threshold = store_threshold(Path(args.model), report, force=args.force)
        print(f"wrote sounding_threshold {threshold:.4f} into {args.model}")
    print(f"report: {report_path}  curve: {plot}")
    return 0
