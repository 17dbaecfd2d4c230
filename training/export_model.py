"""`fnac export CHECKPOINT -o MODEL.onnx`: the deployable, self-describing ONNX model, verified against torch.

Writes inputs image uint8 [B,S,S,3] and audio float32 [B,N], outputs heatmap [B,h,w] and score [B] (and
objectness [B,h,w] with --ogl-weights), and metadata with the sample rate, clip length, image size, τ and more
(docs/CONTRACT.md). ONNX Runtime is run on the result
and nothing is written if it differs from torch by more than 1e-4 of the heatmap range (fp32) or correlates
below 0.99 (fp16/int8).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fnac.errors import FnacError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="fnac checkpoint (.pt) from `fnac train` or `fnac import`")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="half-precision trunks, for GPU providers")
    precision.add_argument(
        "--int8",
        action="store_true",
        help="static per-channel QDQ int8 for the CPU provider (needs --calib-data)",
    )
    p.add_argument("--calib-data", help="dataset directory with frames/ and audio/ to calibrate int8 on")
    p.add_argument("--calib-samples", type=int, default=64, help="calibration samples (default %(default)s)")
    p.add_argument(
        "--sounding-threshold",
        type=float,
        help="raw score above which audio is 'sounding' (default: the checkpoint's, if calibrated)",
    )
    p.add_argument("--name", help="model name recorded in the metadata (default: the checkpoint's file name)")
    p.add_argument(
        "--ogl-weights",
        metavar="RESNET18.pth",
        help="add object-guided localization (OGL): a torchvision ResNet-18 ImageNet state dict whose "
        "objectness map (mean |layer4|) becomes the `objectness` output, fused with the audio-visual map "
        "downstream as in the official test.py (see README)",
    )
    p.add_argument(
        "--ogl-alpha",
        type=float,
        help="weight of the audio-visual map in the OGL fusion, 0..1 (default 0.4, the official value)",
    )


def run(args: argparse.Namespace) -> int:
    from model.checkpoint import load_model
    from model.export import export_onnx

    if args.ogl_alpha is not None and not args.ogl_weights:
        raise FnacError("--ogl-alpha needs --ogl-weights RESNET18.pth (the object branch it weighs against)")
    alpha = 0.4 if args.ogl_alpha is None else args.ogl_alpha
    if not 0.0 <= alpha <= 1.0:
        raise FnacError(f"--ogl-alpha must be between 0 and 1, not {alpha:g}")
    model, ckpt = load_model(args.checkpoint)
    objectness = None
    if args.ogl_weights:
        from model.ogl import load_objectness_weights

        objectness = load_objectness_weights(args.ogl_weights)
    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    calibration = None
    if precision == "int8":
        if not args.calib_data:
            raise FnacError("--int8 needs --calib-data DIR (a dataset directory with frames/ and audio/)")
        from training.layout import calibration_batches

        calibration = calibration_batches(args.calib_data, model.config, args.calib_samples, batch_size=8)
    meta = {k: v for k, v in ckpt.get("metadata", {}).items() if isinstance(v, str | int | float)}
    if args.sounding_threshold is not None:
        meta["sounding_threshold"] = args.sounding_threshold
    if args.name:
        meta["model_name"] = args.name
    meta.setdefault("model_name", Path(args.checkpoint).stem)
    from fnac.runtime import gpu_visible

    providers = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"] if precision == "fp16" and gpu_visible() else None
    )
    parity = export_onnx(
        model,
        args.output,
        meta,
        precision=precision,
        calibration=calibration,
        objectness=objectness,
        ogl_alpha=alpha,
        **({"verify_providers": providers} if providers else {}),
    )
    ogl = (
        f"; OGL (alpha {alpha:g}): max |Δobjectness| {parity.objectness_max_abs_diff:.3g} "
        f"({parity.objectness_relative_diff:.2e} of range), correlation {parity.objectness_correlation:.6f}"
        if objectness is not None
        else ""
    )
    print(
        f"wrote {args.output} ({precision}); vs torch fp32 on batches {parity.batch_sizes}: "
        f"max |Δheatmap| {parity.max_abs_diff:.3g} ({parity.relative_diff:.2e} of range), "
        f"max |Δscore| {parity.score_max_abs_diff:.3g}, correlation {parity.correlation:.6f}, "
        f"same hottest cell {parity.argmax_agreement:.0%}{ogl}"
    )
    return 0
