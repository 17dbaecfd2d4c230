"""`fnac` — one command line for the whole artifact flow (see `fnac --help`).

Heavy libraries (torch, onnxruntime, av) are imported inside the verb that needs them, so `fnac --help` is
instant and `fnac serve` / `fnac score` run where torch is not installed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

DESCRIPTION = """\
FNAC sound-source localization: where in the picture does the sound come from?

artifact flow:
  raw videos --prepare--> dataset dir      (or: synth --> synthetic dataset dir)
  dataset    --train----> checkpoint .pt   (official .pth --import--> checkpoint .pt)
  checkpoint --export---> model.onnx       --serve--> POST /localize    --score--> JSONL offline
  checkpoint or model.onnx --eval--> AP50 / mean cIoU / AUC report
"""


class CLIError(Exception):
    """A user mistake or an unusable input: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------- verbs


def cmd_import(args: argparse.Namespace) -> int:
    from model.checkpoint import atomic_save, import_official

    _, ckpt, notes = import_official(args.src, sample_rate=args.sample_rate, tau=args.tau)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    atomic_save(ckpt, args.output)
    cfg = ckpt["config"]
    print(
        f"wrote {args.output} (width {cfg['width']}, dim {cfg['dim']}, {cfg['sample_rate']} Hz, τ {cfg['tau']})"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from model.checkpoint import load_model
    from model.export import export_onnx

    if args.ogl_alpha is not None and not args.ogl_weights:
        raise CLIError("--ogl-alpha needs --ogl-weights RESNET18.pth (the object branch it weighs against)")
    alpha = 0.4 if args.ogl_alpha is None else args.ogl_alpha
    if not 0.0 <= alpha <= 1.0:
        raise CLIError(f"--ogl-alpha must be between 0 and 1, not {alpha:g}")
    model, ckpt = load_model(args.checkpoint)
    objectness = None
    if args.ogl_weights:
        from model.ogl import load_objectness_weights

        objectness = load_objectness_weights(args.ogl_weights)
    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    calibration = None
    if precision == "int8":
        if not args.calib_data:
            raise CLIError("--int8 needs --calib-data DIR (a dataset directory with frames/ and audio/)")
        from training.layout import calibration_batches

        calibration = calibration_batches(args.calib_data, model.config, args.calib_samples, batch_size=8)
    meta = {k: v for k, v in ckpt.get("metadata", {}).items() if isinstance(v, str | int | float)}
    if args.sounding_threshold is not None:
        meta["sounding_threshold"] = args.sounding_threshold
    if args.name:
        meta["model_name"] = args.name
    meta.setdefault("model_name", Path(args.checkpoint).stem)
    providers = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"] if precision == "fp16" and _gpu_visible() else None
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
    reference = "torch fp32"
    ogl = (
        f"; OGL (alpha {alpha:g}): max |Δobjectness| {parity.objectness_max_abs_diff:.3g} "
        f"({parity.objectness_relative_diff:.2e} of range), correlation {parity.objectness_correlation:.6f}"
        if objectness is not None
        else ""
    )
    print(
        f"wrote {args.output} ({precision}); vs {reference} on batches {parity.batch_sizes}: "
        f"max |Δheatmap| {parity.max_abs_diff:.3g} ({parity.relative_diff:.2e} of range), "
        f"max |Δscore| {parity.score_max_abs_diff:.3g}, correlation {parity.correlation:.6f}, "
        f"same hottest cell {parity.argmax_agreement:.0%}{ogl}"
    )
    return 0


def _gpu_visible() -> bool:
    return Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()


def cmd_serve(args: argparse.Namespace) -> int:
    from service.cli import serve

    overrides = {k: v for k, v in {"providers": args.providers, "workers": None}.items() if v is not None}
    serve(model=args.model, host=args.host, port=args.port, **overrides)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.target == "model":
        from benchmarks.bench_model import main as bench_model

        return bench_model(args)
    if args.target == "service":
        from benchmarks.bench_service import main as bench_service

        return bench_service(args)
    raise CLIError(f"unknown benchmark {args.target!r}")


# Verbs whose options and code live in their own module (`add_arguments(parser)`, `run(args) -> int`).
MODULE_VERBS = {
    "synth": ("training.synth", "generate the synthetic sounding-objects benchmark (VGG-SS layout)"),
    "prepare": ("training.prepare", "turn a folder or CSV of videos into a dataset directory"),
    "train": ("training.train", "train FNAC (or the contrastive baseline) on a dataset directory"),
    "eval": ("training.evaluate", "evaluate a checkpoint or ONNX model with the official protocol"),
    "score": ("training.score", "score videos or frame+audio pairs offline to JSONL"),
}


def _module_runner(module: str):
    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(module).run(args)

    return run


def _module_description(module: str) -> str | None:
    return importlib.import_module(module).__doc__


# ---------------------------------------------------------------------------------------------- parser


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fnac", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    def verb(name: str, help_text: str, handler, description: str | None = None) -> argparse.ArgumentParser:
        p = verbs.add_parser(
            name,
            help=help_text,
            description=description or help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(handler=handler)
        return p

    p = verb(
        "import",
        "convert an official FNAC / EZ-VSL .pth checkpoint into an fnac checkpoint",
        cmd_import,
        "Reads checkpoints released with the official FNAC and EZ-VSL code ({'model': state_dict, ...}, keys\n"
        "possibly prefixed 'module.', or a bare state dict), names any missing parameter, and writes our .pt\n"
        "with the model config and metadata. The official code never resampled audio; choose the rate your\n"
        "inputs will be resampled to.",
    )
    p.add_argument("src", help="official .pth file")
    p.add_argument("-o", "--output", required=True, help="fnac checkpoint to write (.pt)")
    p.add_argument("--sample-rate", type=int, default=16_000, help="model sample rate in Hz (default 16000)")
    p.add_argument("--tau", type=float, default=0.03, help="temperature τ (default 0.03)")

    p = verb(
        "export",
        "export a checkpoint to the deployable ONNX model (verified against torch)",
        cmd_export,
        "Writes a self-describing ONNX model: inputs image uint8 [B,S,S,3] and audio float32 [B,N], outputs\n"
        "heatmap [B,h,w] and score [B] (and objectness [B,h,w] with --ogl-weights), metadata with sample\n"
        "rate, clip length, image size, τ and more.\n"
        "ONNX Runtime is run on the result and nothing is written if it differs from torch by more than\n"
        "1e-4 of the heatmap range (fp32) or correlates below 0.99 (fp16/int8).",
    )
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
    p.add_argument("--calib-samples", type=int, default=64, help="calibration samples (default 64)")
    p.add_argument("--sounding-threshold", type=float, help="raw score above which audio is 'sounding'")
    p.add_argument("--name", help="model name recorded in the metadata (default: checkpoint file name)")
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

    p = verb(
        "serve",
        "run the HTTP service (POST /localize) on an ONNX model",
        cmd_serve,
        "Starts the FastAPI service on ONNX Runtime. Without --model it serves the bundled default model\n"
        "(or FNAC_MODEL). Every FNAC_* environment setting applies; options here override them.",
    )
    p.add_argument("--model", help="ONNX model (default: FNAC_MODEL or the bundled model)")
    p.add_argument("--host", help="bind address (default: FNAC_HOST or 0.0.0.0)")
    p.add_argument("--port", type=int, help="port (default: FNAC_PORT or 8000)")
    p.add_argument("--providers", help="comma list of ONNX Runtime providers, or 'auto' (default)")

    p = verb(
        "bench",
        "measure speed side by side (model: torch vs ONNX fp32/int8; service: HTTP vs raw ORT)",
        cmd_bench,
    )
    p.add_argument("target", choices=["model", "service"])
    p.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (default 20)")
    p.add_argument(
        "--threads", type=int, default=0, help="intra-op threads for torch and ORT (0 = all cores)"
    )
    p.add_argument(
        "--checkpoint", help="checkpoint to benchmark (default: a randomly initialised paper network)"
    )
    p.add_argument("--calib-data", help="dataset directory for int8 calibration (default: generated inputs)")
    p.add_argument(
        "--ogl",
        action="store_true",
        help="model benchmark: also time the graphs with the OGL object branch, side by side",
    )
    p.add_argument(
        "--ogl-weights",
        metavar="RESNET18.pth",
        help="object branch weights for --ogl (default: a randomly initialised ResNet-18, same cost)",
    )
    p.add_argument("--model", help="ONNX model (service benchmark; default: the bundled model)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per service load level (default 10)")
    p.add_argument("--concurrency", default="1,8,32", help="service client concurrencies (default 1,8,32)")
    p.add_argument("--json", help="also write the results as JSON to this file")

    for name, (module, text) in MODULE_VERBS.items():
        p = verb(
            name, text, _module_runner(module), _module_description(module) if name == selected else None
        )
        if name == selected:  # import a verb's module (and its options) only when that verb runs
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in MODULE_VERBS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.handler(args) or 0
    except CLIError as exc:
        print(f"fnac {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fnac {args.verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # Known input problems from the libraries carry a clear message; show it without a traceback.
        from_types = {
            "CheckpointError",
            "ExportError",
            "MediaError",
            "MediaTooLarge",
            "DatasetError",
            "DeviceError",
        }
        if type(exc).__name__ in from_types:
            print(f"fnac {args.verb}: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
