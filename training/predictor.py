"""A model to evaluate, checkpoint or ONNX, behind one call: (images, audio) → (heatmap, score)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.layout import DatasetError


@dataclass(frozen=True)
class InputSpec:
    """What the model takes in: its sample rate, audio window length (samples) and image side."""

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
