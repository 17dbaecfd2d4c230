"""Audio-free priors on the synthetic benchmark: does it leak the answer? Centre box, centre Gaussian, largest
object and the oracle box, scored with the official protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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
