"""`fnac bench model|service|render`: speed measured side by side, printed as ratios (docs/BENCHMARKS.md).

model: eager PyTorch with the official per-item scipy preprocessing against our ONNX fp32 and int8 graphs
(needs the train extra). service: the HTTP service on loopback against the bare ONNX Runtime session, with
micro-batching on and off. render: the overlay MP4 of a clip against the FFmpeg CLI transcoding it with the
same encoder settings.
"""

from __future__ import annotations

import argparse
import importlib

TARGETS = {
    "model": "training.bench_model",
    "service": "training.bench_service",
    "render": "training.bench_render",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", choices=sorted(TARGETS), help="what to measure")
    p.add_argument("--repeats", type=int, default=20, help="model: timed runs per measurement")
    p.add_argument(
        "--threads", type=int, default=0, help="intra-op threads for torch and ORT (0 = all cores)"
    )
    p.add_argument(
        "--checkpoint", help="model: checkpoint to measure (default: a randomly initialised paper network)"
    )
    p.add_argument(
        "--calib-data", help="model: dataset directory for int8 calibration (default: generated inputs)"
    )
    p.add_argument(
        "--ogl",
        action="store_true",
        help="model: also time the graphs with the OGL object branch, side by side",
    )
    p.add_argument(
        "--ogl-weights",
        metavar="RESNET18.pth",
        help="model: object branch weights for --ogl (default: a randomly initialised ResNet-18, same cost)",
    )
    p.add_argument("--model", help="service: ONNX model (default: FNAC_MODEL, else the bundled model)")
    p.add_argument("--duration", type=float, default=10.0, help="service: seconds per load level")
    p.add_argument("--concurrency", default="1,8,32", help="service: client concurrencies, comma separated")
    p.add_argument("--seconds", type=float, default=60.0, help="render: clip length")
    p.add_argument("--size", default="1280x720", help="render: clip size WxH")
    p.add_argument("--fps", type=int, default=30, help="render: clip frame rate")
    p.add_argument("--stride", type=float, default=0.5, help="render: seconds between windows")
    p.add_argument(
        "--scene",
        choices=["pattern", "handheld"],
        default="pattern",
        help="render: the clip's picture. pattern: FFmpeg's testsrc2, mostly still, which x264 skips cheaply "
        "unless an overlay moves on it (the worst case for the render); handheld: the same pattern panning "
        "and with sensor-like noise in every frame, as phone footage is",
    )
    p.add_argument("--rounds", type=int, default=3, help="render: alternating timed rounds")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument(
        "--provider",
        choices=["cpu", "cuda"],
        default="cpu",
        help="model: ONNX Runtime provider for the ONNX graphs (default cpu; cuda: fp32 and fp16, plain run and "
        "IO binding, no eager baseline)",
    )
    p.add_argument("--batches", help="model: comma list of batch sizes (default 1,16)")
    p.add_argument(
        "--precisions", help="model: comma list of fp32, fp16, int8 (default fp32,int8; cuda: fp32,fp16)"
    )
    p.add_argument("--no-eager", action="store_true", help="model: skip the eager torch baseline")


def run(args: argparse.Namespace) -> int:
    return importlib.import_module(TARGETS[args.target]).main(args)
