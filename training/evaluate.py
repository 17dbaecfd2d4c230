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
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fnac import contract, postprocess
from fnac.contract import NEGATIVE_KINDS
from training import metrics
from training.annotations import load_flickr_annotations, load_vggss_json
from training.layout import DatasetError, frames_and_audio, load_pair

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputSpec:
    sample_rate: int
    n_samples: int
    image_size: int


class Predictor:
    """(images uint8 [B,S,S,3], audio float32 [B,N]) → (heatmap [B,h,w], score [B]) for a .pt or .onnx model.

    An ONNX model runs on ONNX Runtime (`providers`); a checkpoint runs in torch, fp32, on `device` ("cpu",
    "cuda", or None: CUDA when torch sees it). `ogl_alpha` is the OGL fusion weight of a model with an object
    branch (an ONNX model exported with one, or a checkpoint given `ogl_weights`), else None."""

    def __init__(
        self,
        path: str | Path,
        providers: list[str] | None = None,
        device: str | None = None,
        threads: int = 0,
        ogl_weights: str | Path | None = None,
        ogl_alpha: float | None = None,
    ):
        """`threads` > 0 caps the CPU threads (ORT intra-op threads, or torch's): several evaluations at once
        on one machine otherwise each take every core and slow each other down many times over."""
        path = Path(path)
        self.path = path
        if path.suffix == ".onnx":
            from fnac.runtime import ModelRuntime

            if ogl_weights is not None or ogl_alpha is not None:
                raise DatasetError(
                    f"{path}: an ONNX model carries its own OGL branch and alpha (fnac export --ogl-weights); "
                    "--ogl-weights / --ogl-alpha are for checkpoints"
                )
            self.runtime = ModelRuntime(path, providers=providers, intra_op_threads=threads)
            meta = self.runtime.metadata
            self.spec = InputSpec(meta.sample_rate, meta.n_samples, meta.image_size)
            self.name = self.runtime.model_id
            self.sounding_threshold = meta.sounding_threshold
            self.ogl_alpha = meta.ogl_alpha
            self._run = self.runtime.run
            self._run_maps = self.runtime.run_maps if self.runtime.has_objectness else None
        else:
            import torch

            from model.checkpoint import load_model
            from model.fnac import FNACLocalizer
            from training.distributed import resolve_device

            self.device = torch.device(resolve_device(device))
            if threads:
                torch.set_num_threads(threads)
            model, ckpt = load_model(path)
            if ogl_alpha is not None and ogl_weights is None:
                raise DatasetError("--ogl-alpha needs --ogl-weights RESNET18.pth")
            objectness = None
            if ogl_weights is not None:
                from model.ogl import DEFAULT_ALPHA, load_objectness_weights

                objectness = load_objectness_weights(ogl_weights)
                ogl_alpha = DEFAULT_ALPHA if ogl_alpha is None else ogl_alpha
                if not 0.0 <= ogl_alpha <= 1.0:
                    raise DatasetError(f"--ogl-alpha must be between 0 and 1, not {ogl_alpha:g}")
            self.ogl_alpha = ogl_alpha
            self.localizer = FNACLocalizer(model, objectness).to(self.device).eval()
            config = model.config
            self.spec = InputSpec(config.sample_rate, config.n_samples, config.image_size)
            self.name = (
                f"{ckpt['metadata'].get('model_name', path.stem)}@{ckpt['metadata']['weights_sha256'][:12]}"
            )
            threshold = ckpt["metadata"].get("sounding_threshold")
            self.sounding_threshold = float(threshold) if threshold is not None else None

            def run_maps(images, audio):
                with torch.inference_mode():
                    outputs = self.localizer(
                        torch.from_numpy(images).to(self.device), torch.from_numpy(audio).to(self.device)
                    )
                return tuple(output.cpu().numpy() for output in outputs)

            self._run = lambda images, audio: run_maps(images, audio)[:2]
            self._run_maps = run_maps if objectness is not None else None

    def __call__(self, images: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._run(images, audio)

    def maps(self, images: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(heatmap, score, objectness [B,h,w] or None without an OGL branch)."""
        if self._run_maps is None:
            return (*self._run(images, audio), None)
        return self._run_maps(images, audio)


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
    negatives_report = {
        kind: {
            "auroc": metrics.auroc(scores["positive"], scores[kind]),
            "n": len(scores[kind]),
            "mean_score": float(np.mean(scores[kind])),
        }
        for kind in kinds
    }
    if negatives_report:
        all_neg = [s for kind in kinds for s in scores[kind]]
        negatives_report["all"] = {"auroc": metrics.auroc(scores["positive"], all_neg), "n": len(all_neg)}
        negatives_report["positive_mean_score"] = float(np.mean(scores["positive"]))
        report["negatives"] = negatives_report
        # The threshold only has to separate what gets past the silence gate: calibrate on those negatives,
        # kind by kind (the target FPR holds for the worst kind, not for the pool).
        audible = {
            kind: [s for s, level in zip(scores[kind], levels[kind], strict=True) if level > silence_dbfs]
            for kind in kinds
        }
        audible = {kind: values for kind, values in audible.items() if values}
        report["sounding_calibration"] = {
            **metrics.calibrate_sounding_threshold(
                scores["positive"],
                audible or {kind: scores[kind] for kind in kinds},
                method=calibration,
                target_fpr=target_fpr,
            ),
            "negatives": "above the silence gate" if audible else "all (none above the silence gate)",
            "silence_dbfs": silence_dbfs,
        }
    sounding = None  # per kind, the service's answer for each sample at the model's threshold
    if negatives_report and predictor.sounding_threshold is not None:
        threshold = predictor.sounding_threshold
        sounding = {
            kind: [
                postprocess.is_sounding(s, level, threshold, silence_dbfs)
                for s, level in zip(scores[kind], levels[kind], strict=True)
            ]
            for kind in scores
            if scores[kind]
        }
        report["sounding_rate"] = {
            "threshold": threshold,
            "silence_dbfs": silence_dbfs,
            **{kind: float(np.mean(answers)) for kind, answers in sounding.items()},
        }
    if "noise" in negatives_report:
        negatives_report["noise"]["by_level"] = _by_level(
            scores["positive"], scores["noise"], levels["noise"], sounding["noise"] if sounding else None
        )
    return report, scored, prior


MAP_LABELS = {"av": "audio-visual", "obj": "objectness (OGL)", "av_obj": "audio-visual + objectness"}
NOISE_BANDS_DBFS = ((-math.inf, -30.0), (-30.0, -15.0), (-15.0, math.inf))


def _by_level(
    positive: list[float], noise: list[float], levels: list[float], sounding: list[bool] | None
) -> list[dict]:
    """Noise negatives split by RMS level: a model may reject quiet hiss and still take loud hiss for a sound.
    With the service's answers (`sounding`, per noise sample), each band also gets its sounding rate."""
    bands = []
    for lo, hi in NOISE_BANDS_DBFS:
        picked = [i for i, level in enumerate(levels) if lo <= level < hi]
        if not picked:
            continue
        band = {
            "dbfs": [None if math.isinf(lo) else lo, None if math.isinf(hi) else hi],  # None: open
            "n": len(picked),
            "auroc": metrics.auroc(positive, [noise[i] for i in picked]),
            "mean_score": float(np.mean([noise[i] for i in picked])),
        }
        if sounding is not None:
            band["sounding_rate"] = float(np.mean([sounding[i] for i in picked]))
        bands.append(band)
    return bands


def _band_limits(band: dict) -> tuple[float, float]:
    lo, hi = band["dbfs"]
    return (-math.inf if lo is None else lo), (math.inf if hi is None else hi)


def write_threshold(model_path: Path, threshold: float, calibration: dict | None = None) -> None:
    """Store a calibrated sounding threshold in the model's own metadata (ONNX metadata_props or checkpoint),
    and with it, as the JSON string `sounding_calibration`, how it was calibrated (`calibration_record`), so
    whoever serves the model can tell what the threshold promises."""
    entries: dict[str, str | float] = {"sounding_threshold": float(threshold)}
    if calibration is not None:
        entries["sounding_calibration"] = json.dumps(calibration, sort_keys=True)
    if model_path.suffix == ".onnx":
        import onnx

        from model.export import set_metadata, write_onnx

        proto = onnx.load(str(model_path))
        set_metadata(proto, {k: repr(v) if isinstance(v, float) else v for k, v in entries.items()})
        write_onnx(proto, model_path)
    else:
        import torch

        from model.checkpoint import atomic_save

        ckpt = torch.load(model_path, map_location="cpu", weights_only=True)
        ckpt.setdefault("metadata", {}).update(entries)
        atomic_save(ckpt, model_path)


def calibration_problem(calibration: dict) -> str | None:
    """Why a calibrated threshold is not worth storing, or None: one that misses its false-positive target, or
    that no real sound reaches, would make the service's `sounding` answer meaningless."""
    target = calibration.get("target_fpr")
    missed = target is not None and calibration["fpr"] > target
    if calibration["tpr"] == 0 or missed:
        goal = f" (target {target:.1%})" if target is not None else ""
        return (
            f"threshold {calibration['threshold']:.4f} answers sounding for {calibration['tpr']:.1%} of real "
            f"sounds and lets {calibration['fpr']:.1%} of negatives through{goal}"
        )
    return None


def calibration_record(report: dict) -> dict:
    """What `sounding_calibration` keeps of a report: the rule, the rates it gave on which split, and the
    dataset's folder name (not its path, which means nothing on the machine that serves the model)."""
    calibration = report["sounding_calibration"]
    kept = (
        "method",
        "target_fpr",
        "tpr",
        "fpr",
        "fpr_by_kind",
        "n_pos",
        "n_neg",
        "negatives",
        "silence_dbfs",
    )
    return {
        **{k: calibration[k] for k in kept if k in calibration},
        "split": report["split"],
        "data": Path(report["data"]).name,
    }


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
    served = scored[report["served_map"]]
    per_sample = served.per_sample()
    if len(scored) > 1:  # OGL: every official row's cIoU for each sample
        for i, row in enumerate(per_sample):
            row["maps"] = {name: evaluator.cious[i] for name, evaluator in scored.items()}
    metrics.write_report(report_path, {**report, "per_sample": per_sample})
    plot = report_path.with_suffix(".png")
    curves = {
        f"{MAP_LABELS[name]} (AUC {evaluator.summary()['auc']:.3f})": evaluator.cious
        for name, evaluator in scored.items()
    }
    try:
        metrics.write_success_plot(
            plot,
            {**curves, f"centre prior (AUC {report['centre_prior']['auc']:.3f})": prior.cious},
            title=f"{report['model']} on {Path(args.data).name} ({report['interpolation']})",
        )
    except ModuleNotFoundError as exc:  # an ONNX model evaluates in the serving install, which has no plots
        print(f"note: no curve plot ({exc.name} is not installed; pip install 'fnac[train]' adds it)")
        plot = "not drawn"
    print(
        f"{report['model']}: AP50 {report['ap50']:.4f}  mean cIoU {report['mean_ciou']:.4f}  AUC {report['auc']:.4f}"
        f"  n={report['n']} of {report['annotated']} annotated ({report['interpolation']})"
    )
    for name, row in report.get("maps", {}).items():
        print(f"  {name}: AP50 {row['ap50']:.4f}  mean cIoU {row['mean_ciou']:.4f}  AUC {row['auc']:.4f}")
    cp = report["centre_prior"]
    print(f"centre prior: AP50 {cp['ap50']:.4f}  mean cIoU {cp['mean_ciou']:.4f}  AUC {cp['auc']:.4f}")
    for kind, values in report.get("negatives", {}).items():
        if isinstance(values, dict):
            print(f"negatives {kind}: AUROC {values['auroc']:.4f} (n={values['n']})")
            for band in values.get("by_level", []):
                lo, hi = _band_limits(band)
                rate = f", sounding {band['sounding_rate']:.3f}" if "sounding_rate" in band else ""
                print(f"  {kind} {lo:g} to {hi:g} dBFS: AUROC {band['auroc']:.4f} (n={band['n']}{rate})")
    rates = report.get("sounding_rate")
    if rates:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in rates.items() if k not in ("threshold", "silence_dbfs"))
        print(f"answered sounding at the model's threshold {rates['threshold']:.4f}: {shown}")
    if args.write_threshold:
        calibration = report.get("sounding_calibration")
        if not calibration:
            raise DatasetError(
                "--write-threshold needs negatives/{silence,noise,offscreen}/<id>.wav in the dataset"
            )
        problem = calibration_problem(calibration)
        if problem and not args.force:
            raise DatasetError(f"not writing the sounding threshold: {problem} (--force writes it anyway)")
        write_threshold(Path(args.model), calibration["threshold"], calibration_record(report))
        print(f"wrote sounding_threshold {calibration['threshold']:.4f} into {args.model}")
    print(f"report: {report_path}  curve: {plot}")
    return 0
