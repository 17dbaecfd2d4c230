"""`fnac bench model`: eager PyTorch with per-item scipy preprocessing (how the official code runs inference)
versus our ONNX fp32 and int8 graphs, measured side by side in one run on the same inputs and threads.

With `--ogl` the same graphs are also exported with the OGL object branch (a frozen ResNet-18; `--ogl-weights`,
else randomly initialised: the cost is the same) and timed in the same interleaved loop, so the price of the
extra branch (export and inference) is a ratio measured side by side.

`--provider cuda` runs the ONNX graphs on the CUDA provider instead (fp32 and fp16 by default, each with plain
session.run and with IO binding; no eager baseline, ratios are against ONNX fp32)."""

from __future__ import annotations

import json
import os
import statistics
import sys
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


def _onnx_runner(session, images: np.ndarray, audio: np.ndarray, io_binding: bool, device_id: int = 0):
    """A closure that runs one batch: plain session.run, or with inputs bound to the GPU and outputs to host
    memory (what the service does on a GPU provider)."""
    from model.export import run_onnx

    if not io_binding:
        return lambda: run_onnx(session, images, audio)
    import onnxruntime as ort

    def run():
        binding = session.io_binding()
        binding.bind_ortvalue_input("image", ort.OrtValue.ortvalue_from_numpy(images, "cuda", device_id))
        binding.bind_ortvalue_input("audio", ort.OrtValue.ortvalue_from_numpy(audio, "cuda", device_id))
        for output in session.get_outputs():  # every output (an OGL graph also has `objectness`)
            binding.bind_output(output.name, "cpu")
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    return run


def _providers(name: str) -> list:
    """ORT providers for --provider: cpu, or cuda (with the CUDA libraries of nvidia-* wheels preloaded)."""
    if name == "cpu":
        return ["CPUExecutionProvider"]
    from fnac import gpu

    gpu.preload_cuda_libraries(gpu.ort_build())
    return [*gpu.provider_options(["CUDAExecutionProvider"], gpu.GpuOptions()), "CPUExecutionProvider"]


def main(args) -> int:
    import torch

    from model.checkpoint import load_model
    from model.export import example_inputs, export_onnx, ort_session, run_onnx
    from model.fnac import FNAC

    provider = getattr(args, "provider", "cpu") or "cpu"
    on_gpu = provider == "cuda"
    batches = [int(b) for b in str(getattr(args, "batches", None) or "1,16").split(",")]
    precisions = (getattr(args, "precisions", None) or ("fp32,fp16" if on_gpu else "fp32,int8")).split(",")
    unknown = set(precisions) - {"fp32", "fp16", "int8"}
    if unknown:
        raise SystemExit(f"fnac bench model: unknown precisions {sorted(unknown)}")
    # The eager baseline runs on the CPU; on a GPU it would only time the CPU.
    eager_wanted = not on_gpu and not getattr(args, "no_eager", False)
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
    calibration, calib_source = None, "-"
    if "int8" in precisions:
        if args.calib_data:
            from training.layout import calibration_batches

            calibration = calibration_batches(args.calib_data, config, 64, batch_size=8)
            calib_source = f"{args.calib_data} (64 samples)"
        else:
            calibration = [example_inputs(config, 8, seed=1000 + i) for i in range(8)]
            calib_source = "generated tone+noise inputs (64 samples)"
    objectness, ogl_source = None, None
    if getattr(args, "ogl", False) or getattr(args, "ogl_weights", None):
        from model.ogl import ObjectnessBranch, load_objectness_weights

        if args.ogl_weights:
            objectness, ogl_source = load_objectness_weights(args.ogl_weights), args.ogl_weights
        else:
            torch.manual_seed(1)
            objectness, ogl_source = ObjectnessBranch(), "randomly initialised ResNet-18"
    variants = {f"onnx {precision}": (precision, None) for precision in precisions}
    if objectness is not None:
        variants.update({f"onnx {precision} + OGL": (precision, objectness) for precision in precisions})
    providers = _providers(provider)
    with tempfile.TemporaryDirectory() as tmp:
        sessions, parities, export_seconds = {}, {}, {}
        for name, (precision, branch) in variants.items():
            path = Path(tmp) / f"{name.replace(' ', '_').replace('+', '')}.onnx"
            start = time.perf_counter()  # export includes tracing, verification against torch, and writing
            parity = export_onnx(
                model,
                path,
                precision=precision,
                calibration=calibration if precision == "int8" else None,
                verify_providers=providers if precision == "fp16" else ("CPUExecutionProvider",),
                objectness=branch,
            )
            export_seconds[name] = time.perf_counter() - start
            parities[name] = parity.as_dict()
            sessions[name] = ort_session(path, providers=providers, threads=threads)
        loaded = {name: sess.get_providers()[0] for name, sess in sessions.items()}
        if on_gpu and any(p != "CUDAExecutionProvider" for p in loaded.values()):
            print(f"fnac bench model: error: the CUDA provider did not load ({loaded})", file=sys.stderr)
            return 2
        eager = _official_style_runner(model, config.sample_rate) if eager_wanted else None
        rows = []
        held_out = example_inputs(config, 16, seed=7)
        reference_name = "onnx fp32" if "onnx fp32" in sessions else next(iter(sessions))
        reference_maps = run_onnx(sessions[reference_name], *held_out)[0]
        for batch in batches:
            images, audio = example_inputs(config, batch, seed=batch)
            runners = {}
            if eager is not None:
                runners["eager torch + scipy"] = lambda i=images, a=audio: eager(i, a)
            for name, sess in sessions.items():
                runners[name] = _onnx_runner(sess, images, audio, io_binding=False)
                if on_gpu:
                    runners[f"{name} io-binding"] = _onnx_runner(sess, images, audio, io_binding=True)
            # Interleave repetitions so machine noise hits every runner alike.
            times = {name: [] for name in runners}
            for fn in runners.values():
                fn()
                fn()
            for _ in range(args.repeats):
                for name, fn in runners.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
            base_name = "eager torch + scipy" if eager is not None else reference_name
            base = statistics.median(times[base_name])
            for name, t in times.items():
                median = statistics.median(t)
                rows.append(
                    {
                        "batch": batch,
                        "runner": name,
                        "median_ms": median * 1e3,
                        "samples_per_s": batch / median,
                        "speedup_vs_base": base / median,
                        "base": base_name,
                    }
                )
        correlations = {}
        for name, sess in sessions.items():
            maps = run_onnx(sess, *held_out)[0]
            correlations[name] = float(np.corrcoef(reference_maps.ravel(), maps.ravel())[0, 1])
        eager_maps = eager(*held_out) if eager is not None else None
    cpu = _cpu_name()
    print(
        f"model: {source}; provider: {provider} (loaded: {sorted(set(loaded.values()))}); CPU: {cpu}; "
        f"threads: {threads}; repeats: {args.repeats}; int8 calibration: {calib_source}"
    )
    print(f"{'batch':>5}  {'runner':<24} {'median ms':>10} {'samples/s':>10} {'× base':>8}")
    for r in rows:
        print(
            f"{r['batch']:>5}  {r['runner']:<24} {r['median_ms']:>10.2f} {r['samples_per_s']:>10.1f} {r['speedup_vs_base']:>8.2f}"
        )
    print(f"(base: {rows[0]['base']}; same batch)")
    for name, corr in correlations.items():
        if name != reference_name:
            print(f"heatmap correlation {name} vs {reference_name} (16 held-out inputs): {corr:.4f}")
    for name, parity in parities.items():
        print(
            f"{name} export vs torch fp32: max |Δheatmap| {parity['relative_diff']:.2e} of range, "
            f"max |Δscore| {parity['score_max_abs_diff']:.2e}, correlation {parity['correlation']:.5f}"
        )
    if eager_maps is not None and "onnx fp32" in sessions:
        diff_fp32 = float(np.abs(reference_maps - eager_maps).max() / (eager_maps.max() - eager_maps.min()))
        print(f"max |fp32 onnx − eager torch+scipy| relative to range: {diff_fp32:.2e}")
    print(
        "export (trace + verify + write) seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in export_seconds.items())
    )
    ogl_cost = []
    if objectness is not None:
        print(f"OGL object branch: {ogl_source}; cost = median with OGL / median without, same batch")
        median = {(r["batch"], r["runner"]): r["median_ms"] for r in rows}
        for batch in batches:
            for precision in precisions:
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
                    "model": source,
                    "provider": provider,
                    "loaded_providers": loaded,
                    "cpu": cpu,
                    "threads": threads,
                    "rows": rows,
                    "correlation_vs_reference": correlations,
                    "export_parity": parities,
                    "export_seconds": export_seconds,
                    "ogl_cost": ogl_cost,
                    # kept for readers of earlier reports
                    "int8_correlation": correlations.get("onnx int8"),
                },
                indent=2,
            )
        )
    return 0


def _cpu_name() -> str:
    """The CPU model, as lscpu / /proc/cpuinfo say it (ratios between runners move with it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()}"
    except OSError:
        pass
    return f"unknown x {os.cpu_count()}"
