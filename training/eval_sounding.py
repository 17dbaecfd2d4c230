"""The negative-audio half of `fnac eval`: how well the raw `score` separates real sounds from silence, noise and
off-screen sounds (AUROC, overall, by kind and by noise level), the calibrated `sounding` threshold, the rate the
model's own threshold answers `sounding`, and storing a calibrated threshold in the model file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from fnac import postprocess
from training import metrics
from training.layout import DatasetError

NOISE_BANDS_DBFS = ((-math.inf, -30.0), (-30.0, -15.0), (-15.0, math.inf))


def negatives_report(
    scores: dict[str, list[float]],
    levels: dict[str, list[float]],
    kinds: list[str],
    *,
    sounding_threshold: float | None,
    silence_dbfs: float,
    calibration: str,
    target_fpr: float,
) -> dict:
    """The report's `negatives`, `sounding_calibration` and `sounding_rate` (those that apply; none without
    scored negatives) from the scores and RMS levels (dBFS) of the positives and of each scored negative kind."""
    report: dict = {}
    by_kind = {
        kind: {
            "auroc": metrics.auroc(scores["positive"], scores[kind]),
            "n": len(scores[kind]),
            "mean_score": float(np.mean(scores[kind])),
        }
        for kind in kinds
    }
    if by_kind:
        all_neg = [s for kind in kinds for s in scores[kind]]
        by_kind["all"] = {"auroc": metrics.auroc(scores["positive"], all_neg), "n": len(all_neg)}
        by_kind["positive_mean_score"] = float(np.mean(scores["positive"]))
        report["negatives"] = by_kind
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
    if by_kind and sounding_threshold is not None:
        threshold = sounding_threshold
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
    if "noise" in by_kind:
        by_kind["noise"]["by_level"] = _by_level(
            scores["positive"], scores["noise"], levels["noise"], sounding["noise"] if sounding else None
        )
    return report


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


def band_limits(band: dict) -> tuple[float, float]:
    """A noise band's (low, high) dBFS, infinite where open."""
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


def store_threshold(model_path: Path, report: dict, force: bool = False) -> float:
    """Write the report's calibrated threshold into the model (`write_threshold`) and return it; refused when
    the report has no calibration, or one not worth storing (`calibration_problem`) unless `force`."""
    calibration = report.get("sounding_calibration")
    if not calibration:
        raise DatasetError(
            "--write-threshold needs negatives/{silence,noise,offscreen}/<id>.wav in the dataset"
        )
    problem = calibration_problem(calibration)
    if problem and not force:
        raise DatasetError(f"not writing the sounding threshold: {problem} (--force writes it anyway)")
    write_threshold(model_path, calibration["threshold"], calibration_record(report))
    return calibration["threshold"]
