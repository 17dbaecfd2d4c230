"""What `fnac eval` writes and prints: the report JSON with its per-sample rows, the success-rate curve beside it
and the summary lines on stdout."""

from __future__ import annotations

from pathlib import Path

from training import metrics
from training.eval_sounding import band_limits

MAP_LABELS = {"av": "audio-visual", "obj": "objectness (OGL)", "av_obj": "audio-visual + objectness"}


def write_outputs(
    report_path: Path,
    report: dict,
    scored: dict[str, metrics.Evaluator],
    prior: metrics.Evaluator,
    data: str | Path,
) -> Path | str:
    """Write `report` with the served map's per-sample rows to `report_path`, and the success-rate curves of every
    scored map and the centre prior beside it (.png); returns the plot's path, or "not drawn" without matplotlib."""
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
            title=f"{report['model']} on {Path(data).name} ({report['interpolation']})",
        )
    except ModuleNotFoundError as exc:  # an ONNX model evaluates in the serving install, which has no plots
        print(f"note: no curve plot ({exc.name} is not installed; pip install 'fnac[train]' adds it)")
        plot = "not drawn"
    return plot


def print_summary(report: dict) -> None:
    """The report's headline numbers: each map, the centre prior, the negatives and the sounding rates."""
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
                lo, hi = band_limits(band)
                rate = f", sounding {band['sounding_rate']:.3f}" if "sounding_rate" in band else ""
                print(f"  {kind} {lo:g} to {hi:g} dBFS: AUROC {band['auroc']:.4f} (n={band['n']}{rate})")
    rates = report.get("sounding_rate")
    if rates:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in rates.items() if k not in ("threshold", "silence_dbfs"))
        print(f"answered sounding at the model's threshold {rates['threshold']:.4f}: {shown}")
