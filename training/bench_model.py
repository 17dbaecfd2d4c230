"""`fnac bench model`: eager PyTorch with per-item scipy preprocessing (how the official code runs inference)
versus our ONNX fp32 and int8 graphs, measured side by side in one run on the same inputs and threads.

With `--ogl` the same graphs are also exported with the OGL object branch (a frozen ResNet-18; `--ogl-weights`,
else randomly initialised: the cost is the same) and timed in the same interleaved loop, so the price of the
extra branch (export and inference) is a ratio measured side by side."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _official_style_runner(model, sample_rate: int):
    """Per-item scipy spectrogram + torchvision normalisation, then the eager network, as in the research code."""
    import scipy.signal
    import torch
    import torchvision.transforms.functional as TF

    from model.fnac import localization_map

    def run(images: np.ndarray, audio: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            imgs, specs = [], []
            for image, wave in zip(images, audio, strict=True):
                img = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
                imgs.append(TF.normalize(img, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
                _, _, power = scipy.signal.spectrogram(wave, sample_rate, nperseg=512, noverlap=274)
                specs.append(torch.tensor(np.log(power + 1e-7), dtype=torch.float32)[None] / 12.0)
            img_batch = torch.stack(imgs)
            v = torch.nn.functional.normalize(model.img_proj(model.imgnet(img_batch)), dim=1)
            a = model.encode_spectrogram(torch.stack(specs))
            return localization_map(v, a, model.tau).numpy()

    return run


def main(args) -> int:
    import torch

    from model.checkpoint import load_model
    from model.export import ort_session, run_onnx
    from model.fnac import FNAC

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    if args.checkpoint:
        model, _ = load_model(args.checkpoint)
        source = args.checkpoint
    else:
        torch.manual_seed(0)
        model = FNAC().eval()
        source = "randomly initialised paper network (width 64, dim 512, 224 px)"
    config = model.config
    from model.export import example_inputs, export_onnx

    if args.calib_data:
        from training.layout import calibration_batches

        calibration = calibration_batches(args.calib_data, config, 64, batch_size=8)
        calib_source = f"{args.calib_data} (64 samples)"
    else:
        calibration = [example_inputs(config, 8, seed=1000 + i) for i in range(8)]
        calib_source = "generated tone+noise inputs (64 samples)"
    objectness, ogl_source = None, None
    if args.ogl or args.ogl_weights:
        from model.ogl import ObjectnessBranch, load_objectness_weights

        if args.ogl_weights:
            objectness, ogl_source = load_objectness_weights(args.ogl_weights), args.ogl_weights
        else:
            torch.manual_seed(1)
            objectness, ogl_source = ObjectnessBranch(), "randomly initialised ResNet-18"
    variants = {"onnx fp32": ("fp32", None), "onnx int8": ("int8", None)}
    if objectness is not None:
        variants.update({"onnx fp32 + OGL": ("fp32", objectness), "onnx int8 + OGL": ("int8", objectness)})
    with tempfile.TemporaryDirectory() as tmp:
        sessions, export_seconds = {}, {}
        for name, (precision, branch) in variants.items():
            path = Path(tmp) / f"{name.replace(' ', '_').replace('+', '')}.onnx"
            start = time.perf_counter()  # export includes tracing, verification against torch, and writing
            export_onnx(model, path, precision=precision, calibration=calibration, objectness=branch)
            export_seconds[name] = time.perf_counter() - start
            sessions[name] = ort_session(path, threads=threads)
        eager = _official_style_runner(model, config.sample_rate)
        rows = []
        held_out = example_inputs(config, 16, seed=7)
        fp32_maps = run_onnx(sessions["onnx fp32"], *held_out)[0]
        for batch in (1, 16):
            images, audio = example_inputs(config, batch, seed=batch)
            runners = {"eager torch + scipy": lambda i=images, a=audio: eager(i, a)}
            for name, sess in sessions.items():
                runners[name] = lambda s=sess, i=images, a=audio: run_onnx(s, i, a)
            # Interleave repetitions so machine noise hits every runner alike.
            times = {name: [] for name in runners}
            for fn in runners.values():
                fn()
            for _ in range(args.repeats):
                for name, fn in runners.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
            base = statistics.median(times["eager torch + scipy"])
            for name, t in times.items():
                median = statistics.median(t)
                rows.append(
                    {
                        "batch": batch,
                        "runner": name,
                        "median_ms": median * 1e3,
                        "samples_per_s": batch / median,
                        "speedup_vs_eager": base / median,
                    }
                )
        int8_maps = run_onnx(sessions["onnx int8"], *held_out)[0]
        eager_maps = eager(*held_out)
    corr_int8 = float(np.corrcoef(fp32_maps.ravel(), int8_maps.ravel())[0, 1])
    diff_fp32 = float(np.abs(fp32_maps - eager_maps).max() / (eager_maps.max() - eager_maps.min()))
    print(f"model: {source}; threads: {threads}; repeats: {args.repeats}; int8 calibration: {calib_source}")
    print(f"{'batch':>5}  {'runner':<20} {'median ms':>10} {'samples/s':>10} {'× eager':>8}")
    for r in rows:
        print(
            f"{r['batch']:>5}  {r['runner']:<20} {r['median_ms']:>10.1f} {r['samples_per_s']:>10.1f} {r['speedup_vs_eager']:>8.2f}"
        )
    print(f"heatmap correlation int8 vs fp32 (16 held-out inputs): {corr_int8:.4f}")
    print(f"max |fp32 onnx − eager torch+scipy| relative to range: {diff_fp32:.2e}")
    print(
        "export (trace + verify + write) seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in export_seconds.items())
    )
    ogl_cost = []
    if objectness is not None:
        print(f"OGL object branch: {ogl_source}; cost = median with OGL / median without, same batch")
        median = {(r["batch"], r["runner"]): r["median_ms"] for r in rows}
        for batch in (1, 16):
            for precision in ("fp32", "int8"):
                plain, ogl = median[batch, f"onnx {precision}"], median[batch, f"onnx {precision} + OGL"]
                ogl_cost.append(
                    {"batch": batch, "precision": precision, "ms": plain, "ogl_ms": ogl, "ratio": ogl / plain}
                )
                print(
                    f"  batch {batch:>2} {precision}: {plain:.1f} ms → {ogl:.1f} ms with OGL (×{ogl / plain:.2f})"
                )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": rows,
                    "int8_correlation": corr_int8,
                    "threads": threads,
                    "export_seconds": export_seconds,
                    "ogl_cost": ogl_cost,
                },
                indent=2,
            )
        )
    return 0
