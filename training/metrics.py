"""The official sound-source localization evaluation protocol (EZ-VSL / FNAC), in numpy.

Everything here reproduces the public evaluation code to the digit (docs/METHOD.md,
"Evaluation protocol"):

- the model heatmap (e.g. 7×7) is upsampled to 224×224, bicubic (train-time validation) or bilinear with
  ``align_corners=True`` (official ``test.py``), exactly as ``torch.nn.functional.interpolate`` does;
- it is min-max normalised (a constant map is left unchanged, as in the official ``normalize_img``);
- threshold t = value at index ⌊h·w/2⌋ of the sorted flattened map; predicted mask = map ≥ t;
- cIoU = Σ(pred·gt) / (Σgt + Σ(pred·[gt=0])) against a ground-truth map that is binary for VGG-SS (union of
  boxes) and takes the consensus values 0 / 0.5 / 1 for Flickr-SoundNet;
- AP50 = fraction of samples with cIoU ≥ 0.5 (what papers call "cIoU"), mean cIoU, and AUC = trapezoid over
  the 21 thresholds 0.05·i (i = 0..20) of the fraction of samples with cIoU ≥ threshold.

Also here: audio-free prior heatmaps (centre prior, box prior), AUROC for negative-audio detection and the
calibration of a ``sounding`` threshold on raw scores, an accumulating :class:`Evaluator`, and a PNG writer for
the success-rate curve. torch is imported only to upsample, and only when it is installed (``backend="auto"``)
or asked for (``backend="torch"``); without it the numpy kernel is used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

EVAL_SIZE = 224
INTERPOLATIONS = ("bicubic", "bilinear")
# Thresholds of the success-rate curve, computed as the official code does (0.05 * i, not np.linspace:
# the two differ in the last bit for some i, and cIoU values can sit exactly on a threshold).
CURVE_THRESHOLDS = np.array([0.05 * i for i in range(21)])
_CUBIC_A = -0.75  # torch's bicubic kernel constant


# ----------------------------------------------------------------------------------------------------------
# Upsampling (numpy re-implementation of F.interpolate)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """Keys cubic-convolution weights for the 4 taps at offsets -1, 0, 1, 2 (torch's A = -0.75)."""
    a = _CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _interp_matrix(in_size: int, out_size: int, mode: str) -> np.ndarray:
    """(out_size, in_size) matrix M such that out = M @ in along one axis."""
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    if mode == "bicubic":
        # align_corners=False, size given: scale = in/out, source = scale·(dst+0.5) − 0.5, not clamped at 0
        # for the cubic case; taps outside the input are clamped to the border.
        src = (in_size / out_size) * (rows + 0.5) - 0.5
        base = np.floor(src)
        weights = _cubic_weights(src - base)
        for k in range(4):
            idx = np.clip(base.astype(np.int64) - 1 + k, 0, in_size - 1)
            np.add.at(matrix, (rows, idx), weights[:, k])
    elif mode == "bilinear":
        # align_corners=True: source = dst·(in−1)/(out−1).
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = scale * rows
        i0 = np.floor(src).astype(np.int64)
        i0 = np.clip(i0, 0, in_size - 1)
        i1 = np.minimum(i0 + 1, in_size - 1)
        lam = src - i0
        np.add.at(matrix, (rows, i0), 1.0 - lam)
        np.add.at(matrix, (rows, i1), lam)
    else:
        raise ValueError(f"unknown interpolation {mode!r}; expected one of {INTERPOLATIONS}")
    return matrix


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def upsample_heatmap(
    heatmap: np.ndarray,
    size: int | tuple[int, int] = EVAL_SIZE,
    mode: str = "bicubic",
    backend: str = "auto",
) -> np.ndarray:
    """Upsample a heatmap [..., h, w] to [..., H, W] like ``F.interpolate``; returns float32.

    ``mode="bicubic"`` is ``F.interpolate(mode="bicubic", align_corners=False)`` (the official train-time
    validation); ``mode="bilinear"`` is ``F.interpolate(mode="bilinear", align_corners=True)`` (official
    ``test.py``). ``backend="torch"`` calls torch itself on CPU: bit-identical to the official pipeline.
    ``backend="numpy"`` is the same separable kernel computed in float64; it agrees with torch's float32 kernel
    to ~1e-6 of the map's range (torch's own rounding order depends on its build: FMA contraction), which can
    move a pixel across the median threshold only when two values are that close. ``"auto"`` (default) uses
    torch when it is importable and numpy otherwise (the torch-free serving image).
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    heatmap = np.asarray(heatmap)
    if heatmap.ndim < 2:
        raise ValueError(f"heatmap must have at least 2 dims (h, w), got shape {heatmap.shape}")
    if backend == "auto":
        backend = "torch" if _torch_available() else "numpy"
    if backend == "torch":
        import torch
        import torch.nn.functional as F

        lead = heatmap.shape[:-2]
        x = torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32)).reshape(
            -1, 1, *heatmap.shape[-2:]
        )
        align = mode == "bilinear"
        if mode not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {mode!r}; expected one of {INTERPOLATIONS}")
        y = F.interpolate(x, size=(out_h, out_w), mode=mode, align_corners=align)
        return y.reshape(*lead, out_h, out_w).numpy()
    if backend != "numpy":
        raise ValueError(f"unknown backend {backend!r}; expected 'numpy' or 'torch'")
    rows = _interp_matrix(heatmap.shape[-2], out_h, mode)
    cols = _interp_matrix(heatmap.shape[-1], out_w, mode)
    out = rows @ heatmap.astype(np.float64) @ cols.T
    return out.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Per-sample protocol


def minmax_normalize(heatmap: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1] in the map's own float dtype; a constant map is returned unchanged.

    Mirrors the official ``normalize_img`` (which skips the division when max == min).
    """
    heatmap = np.asarray(heatmap)
    if not np.issubdtype(heatmap.dtype, np.floating):
        heatmap = heatmap.astype(np.float64)
    vmin, vmax = heatmap.min(), heatmap.max()
    if vmax - vmin == 0:
        return heatmap.copy()
    return (heatmap - vmin) / (vmax - vmin)


def median_threshold(heatmap: np.ndarray) -> float:
    """The protocol's threshold: the value at index ⌊h·w/2⌋ of the sorted flattened map."""
    flat = np.sort(np.asarray(heatmap).ravel())
    return flat[int(flat.size * 0.5)]


def predicted_mask(heatmap: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Binary mask (float64 0/1) of pixels ≥ threshold (default: :func:`median_threshold`)."""
    if threshold is None:
        threshold = median_threshold(heatmap)
    return (np.asarray(heatmap) >= threshold).astype(np.float64)


def ciou(pred_mask: np.ndarray, gt_map: np.ndarray) -> float:
    """Consensus IoU of one sample: Σ(pred·gt) / (Σgt + Σ(pred·[gt=0]))."""
    pred_mask = np.asarray(pred_mask, dtype=np.float64)
    gt_map = np.asarray(gt_map, dtype=np.float64)
    if pred_mask.shape != gt_map.shape:
        raise ValueError(f"prediction {pred_mask.shape} and ground truth {gt_map.shape} differ in shape")
    denominator = gt_map.sum() + (pred_mask * (gt_map == 0)).sum()
    if denominator == 0:  # empty gt and empty prediction: cannot happen with the median threshold
        return 0.0
    return float((pred_mask * gt_map).sum() / denominator)


def prepare_heatmap(
    heatmap: np.ndarray, size: int = EVAL_SIZE, interpolation: str = "bicubic", backend: str = "auto"
) -> np.ndarray:
    """Raw model heatmap (any h×w) → upsampled to size×size (if needed) → min-max normalised."""
    heatmap = np.asarray(heatmap)
    if heatmap.ndim != 2:
        raise ValueError(f"expected one 2-D heatmap, got shape {heatmap.shape}")
    if heatmap.shape != (size, size):
        heatmap = upsample_heatmap(heatmap, size, interpolation, backend=backend)
    return minmax_normalize(heatmap)


def sample_ciou(
    heatmap: np.ndarray,
    gt_map: np.ndarray,
    interpolation: str = "bicubic",
    backend: str = "auto",
) -> float:
    """cIoU of one raw heatmap against a ground-truth map, with the full official recipe."""
    gt_map = np.asarray(gt_map)
    pred = prepare_heatmap(heatmap, gt_map.shape[0], interpolation, backend)
    return ciou(predicted_mask(pred), gt_map)


# ----------------------------------------------------------------------------------------------------------
# Ground-truth maps


def vggss_gt_map(boxes: Iterable[Sequence[float]], size: int = EVAL_SIZE) -> np.ndarray:
    """VGG-SS ground truth: normalised [x0, y0, x1, y1] boxes clipped to [0, 1], ×size, truncated to int,
    union → binary float64 map (official slicing ``gt[y0:y1, x0:x1]``, end-exclusive)."""
    gt = np.zeros((size, size))
    for box in boxes:
        x0, y0, x1, y1 = (np.clip(np.asarray(box, dtype=np.float64), 0, 1) * size).astype(int)
        gt[y0:y1, x0:x1] = 1
    return gt


def flickr_gt_map(boxes_256: Iterable[Sequence[int]], size: int = EVAL_SIZE) -> np.ndarray:
    """Flickr-SoundNet ground truth from per-annotator [xmin, ymin, xmax, ymax] boxes in 256×256 pixels.

    Each coordinate becomes ``int(size·v/256)``; the per-box masks are summed, divided by 2 and clipped to 1,
    so a cell is 1 where ≥ 2 boxes agree, 0.5 where exactly one does.
    """
    gt = np.zeros((size, size))
    for box in boxes_256:
        x0, y0, x1, y1 = (int(size * int(v) / 256) for v in box)
        gt[y0:y1, x0:x1] += 1
    gt = gt / 2
    gt[gt > 1] = 1
    return gt


# ----------------------------------------------------------------------------------------------------------
# Aggregates


def success_curve(cious: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds 0.05·i for i = 0..20, fraction of samples with cIoU ≥ threshold)."""
    values = np.asarray(cious, dtype=np.float64)
    if values.size == 0:
        return CURVE_THRESHOLDS.copy(), np.zeros_like(CURVE_THRESHOLDS)
    fractions = np.array([np.sum(values >= t) / values.size for t in CURVE_THRESHOLDS])
    return CURVE_THRESHOLDS.copy(), fractions


def auc_from_cious(cious: Sequence[float]) -> float:
    """Trapezoidal area under the success-rate curve (what ``sklearn.metrics.auc`` gives on it)."""
    x, y = success_curve(cious)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def summarize_cious(cious: Sequence[float]) -> dict:
    """``{"ap50", "mean_ciou", "auc", "n"}`` of a list of per-sample cIoUs (NaN when empty)."""
    values = np.asarray(cious, dtype=np.float64)
    if values.size == 0:
        return {"ap50": math.nan, "mean_ciou": math.nan, "auc": math.nan, "n": 0}
    return {
        "ap50": float(np.mean(values >= 0.5)),
        "mean_ciou": float(np.mean(values)),
        "auc": auc_from_cious(values),
        "n": int(values.size),
    }


class Evaluator:
    """Accumulates per-sample cIoU with the official recipe and summarises it.

    >>> ev = Evaluator(interpolation="bicubic")
    >>> ev.add(heatmap_7x7, vggss_gt_map(boxes), sample_id="abc_000030")  # doctest: +SKIP
    >>> ev.summary()  # {"ap50", "mean_ciou", "auc", "n", "interpolation", ...}  # doctest: +SKIP
    """

    def __init__(self, interpolation: str = "bicubic", size: int = EVAL_SIZE, backend: str = "auto"):
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {INTERPOLATIONS}")
        self.interpolation = interpolation
        self.size = size
        self.backend = backend
        self.cious: list[float] = []
        self.ids: list[str | None] = []

    def add(self, heatmap: np.ndarray, gt_map: np.ndarray, sample_id: str | None = None) -> float:
        """Score one raw heatmap (any h×w; upsampled unless already size×size); returns its cIoU."""
        gt_map = np.asarray(gt_map)
        if gt_map.shape != (self.size, self.size):
            raise ValueError(f"ground-truth map must be {self.size}×{self.size}, got {gt_map.shape}")
        value = sample_ciou(heatmap, gt_map, self.interpolation, self.backend)
        self.cious.append(value)
        self.ids.append(sample_id)
        return value

    def add_ciou(self, value: float, sample_id: str | None = None) -> None:
        """Record an already computed cIoU (e.g. gathered from another process)."""
        self.cious.append(float(value))
        self.ids.append(sample_id)

    def __len__(self) -> int:
        return len(self.cious)

    def summary(self) -> dict:
        """``{"ap50", "mean_ciou", "auc", "n", "interpolation", "size", "upsampling_backend"}``."""
        return {
            **summarize_cious(self.cious),
            "interpolation": self.interpolation,
            "size": self.size,
            "upsampling_backend": self.backend,
        }

    def per_sample(self) -> list[dict]:
        """``[{"id", "ciou"}]`` in insertion order."""
        return [{"id": i, "ciou": c} for i, c in zip(self.ids, self.cious, strict=True)]

    def write_success_plot(self, path: str | Path, title: str | None = None) -> Path:
        """Write the success-rate curve PNG (see :func:`write_success_plot`)."""
        label = f"AUC {auc_from_cious(self.cious):.3f} ({self.interpolation})"
        return write_success_plot(path, {label: self.cious}, title=title)


def write_success_plot(
    path: str | Path, curves: dict[str, Sequence[float]], title: str | None = None
) -> Path:
    """Success-rate curves (fraction of samples with cIoU ≥ t against t) for named cIoU lists, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for label, values in curves.items():
        x, y = success_curve(values)
        ax.plot(x, y, marker="o", markersize=3, label=f"{label} (n={len(values)})")
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("cIoU threshold")
    ax.set_ylabel("fraction of samples with cIoU ≥ threshold")
    ax.set_title(title or "Success rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------
# Audio-free priors


def centre_prior(size: int = EVAL_SIZE, kind: str = "gaussian") -> np.ndarray:
    """A heatmap that knows nothing but "sources are near the middle", in [0, 1].

    ``kind="gaussian"``: an isotropic Gaussian (σ = size/4) centred in the frame; under the median threshold its
    mask is the centred disc covering half the image. ``kind="box"``: 1 − Chebyshev distance to the centre
    (normalised), whose mask is the centred square covering half the image (side size/√2). Both are smooth, so
    the median threshold selects a meaningful half rather than breaking ties.
    """
    centre = (size - 1) / 2
    coords = (np.arange(size) - centre) / (size / 2)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    if kind == "gaussian":
        sigma = 0.5  # = size/4 in pixels
        heatmap = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    elif kind == "box":
        heatmap = 1 - np.maximum(np.abs(xx), np.abs(yy))
    else:
        raise ValueError(f"unknown centre prior {kind!r}; expected 'gaussian' or 'box'")
    return minmax_normalize(heatmap)


def box_prior(boxes: Iterable[Sequence[float]], size: int = EVAL_SIZE) -> np.ndarray:
    """Heatmap from normalised [x0, y0, x1, y1] boxes: 1 inside any box, decaying linearly with the distance
    (in image widths) outside, so that the median threshold grows the boxes into the top half of the image
    when they cover less than half of it (a binary map would tie and select the whole image)."""
    coords = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    distance = np.full((size, size), np.inf)
    for box in boxes:
        x0, y0, x1, y1 = np.clip(np.asarray(box, dtype=np.float64), 0, 1)
        dx = np.maximum(np.maximum(x0 - xx, xx - x1), 0)
        dy = np.maximum(np.maximum(y0 - yy, yy - y1), 0)
        distance = np.minimum(distance, np.hypot(dx, dy))
    if not np.isfinite(distance).any():
        return np.zeros((size, size))
    return 1 - distance / np.sqrt(2)


# ----------------------------------------------------------------------------------------------------------
# Negative audio: is there a visible sounding object at all?


def auroc(positive_scores: Sequence[float], negative_scores: Sequence[float]) -> float:
    """Area under the ROC curve of scores for positives vs negatives (ties count ½, Mann–Whitney U)."""
    pos = np.asarray(positive_scores, dtype=np.float64).ravel()
    neg = np.asarray(negative_scores, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        return math.nan
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # mid-ranks: every member of a run of equal scores gets the average rank of the run
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], scores.size]
    run_rank = (starts + ends + 1) / 2  # 1-based average rank
    ranks = np.empty(scores.size)
    ranks[order] = np.repeat(run_rank, ends - starts)
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def calibrate_sounding_threshold(
    positive_scores: Sequence[float],
    negative_scores: Sequence[float] | Mapping[str, Sequence[float]],
    method: str = "youden",
    target_fpr: float = 0.05,
) -> dict:
    """Pick a raw-score threshold for the ``sounding`` decision (sounding ⇔ score ≥ threshold).

    ``method="youden"`` maximises TPR − FPR (Youden's J) over the observed scores; ``method="fpr"`` takes the
    lowest threshold whose false-positive rate on the negatives is ≤ ``target_fpr``. Negatives given as
    ``{kind: scores}`` count per kind: the FPR is that of the worst kind, so an easy kind (off-screen sounds)
    cannot hide a hard one (loud noise) in the pooled rate. The returned threshold sits halfway between the
    chosen observed score and the next lower observed score, so it does not sit exactly on a calibration
    sample. Returns ``{"threshold", "tpr", "fpr", "method", "n_pos", "n_neg"}``, plus ``fpr_by_kind``.
    """
    pos = np.asarray(positive_scores, dtype=np.float64).ravel()
    if isinstance(negative_scores, Mapping):
        kinds = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in negative_scores.items() if len(v)}
    else:
        kinds = {"all": np.asarray(negative_scores, dtype=np.float64).ravel()}
    neg = np.concatenate(list(kinds.values())) if kinds else np.zeros(0)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("calibration needs at least one positive and one negative score")
    candidates = np.unique(np.concatenate([pos, neg]))  # ascending

    def rate_at_or_above(scores: np.ndarray) -> np.ndarray:
        return (scores.size - np.searchsorted(np.sort(scores), candidates, side="left")) / scores.size

    tpr = rate_at_or_above(pos)
    if method == "youden":
        j = tpr - rate_at_or_above(neg)
        best = int(np.flatnonzero(j == j.max())[-1])  # among ties, the most conservative (highest) threshold
    elif method == "fpr":
        worst = np.max([rate_at_or_above(scores) for scores in kinds.values()], axis=0)
        ok = np.flatnonzero(worst <= target_fpr)
        best = int(ok[0]) if ok.size else len(candidates) - 1
    else:
        raise ValueError(f"unknown calibration method {method!r}; expected 'youden' or 'fpr'")
    chosen = candidates[best]
    threshold = (chosen + candidates[best - 1]) / 2 if best > 0 else chosen
    by_kind = {k: float(np.mean(scores >= threshold)) for k, scores in kinds.items()}
    result = {
        "threshold": float(threshold),
        "tpr": float(np.mean(pos >= threshold)),
        "fpr": max(by_kind.values()) if method == "fpr" else float(np.mean(neg >= threshold)),
        "method": method,
        "n_pos": int(pos.size),
        "n_neg": int(neg.size),
    }
    if method == "fpr":
        result["target_fpr"] = float(target_fpr)
    if isinstance(negative_scores, Mapping):
        result["fpr_by_kind"] = by_kind
    return result


def write_report(path: str | Path, report: dict) -> Path:
    """Write a report dict as pretty JSON (NaN → null), creating parent folders."""

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            return clean(value.item())
        return value

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(report), indent=2) + "\n")
    return path
