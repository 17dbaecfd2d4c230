"""The ONNX Runtime session: which execution providers, how many threads, what the model says about itself.

The model is self-describing (docs/CONTRACT.md): sample rate, clip length, image size, tau and the sounding
threshold are read from its metadata_props and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from fnac import contract, gpu
from fnac.errors import FnacError

log = logging.getLogger("fnac.runtime")

SUPPORTED_FORMAT_VERSIONS = {contract.FORMAT_VERSION}
# Used only when the model carries no calibrated `sounding_threshold` and FNAC_SOUNDING_THRESHOLD is unset:
# a raw cosine of 0.5 is well above what unrelated audio-visual pairs reach in practice.
FALLBACK_SOUNDING_THRESHOLD = contract.FALLBACK_SOUNDING_THRESHOLD

_PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class ModelError(FnacError, RuntimeError):
    """The model file is missing or does not honour the ONNX contract."""


@dataclass(frozen=True)
class ModelMetadata:
    """The typed view of the model's metadata_props."""

    format_version: str
    sample_rate: int
    clip_seconds: float
    image_size: int
    tau: float
    sounding_threshold: float | None
    model_name: str = "unknown"
    training_data: str = ""
    weights_sha256: str = ""
    fnac_version: str = ""
    precision: str = "fp32"
    heatmap_size: int | None = None
    ogl_alpha: float | None = None
    spectrogram: dict = field(default_factory=dict)
    sounding_calibration: dict | None = None  # how the threshold was calibrated (fnac eval --write-threshold)
    raw: dict[str, str] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return round(self.sample_rate * self.clip_seconds)

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        missing = [k for k in contract.REQUIRED_METADATA if k != "fnac_format_version" and k not in props]
        if missing:
            raise ModelError(f"{source}: metadata_props lack {', '.join(missing)} (see docs/CONTRACT.md)")
        version = props.get("fnac_format_version", "")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise ModelError(f"{source}: fnac_format_version {version!r} is not supported (expected 1)")
        try:

            def optional(key, cast):
                return cast(props[key]) if props.get(key, "") != "" else None

            return cls(
                format_version=version,
                sample_rate=int(props["sample_rate"]),
                clip_seconds=float(props["clip_seconds"]),
                image_size=int(props["image_size"]),
                tau=float(props["tau"]),
                sounding_threshold=optional("sounding_threshold", float),
                model_name=props.get("model_name", "unknown"),
                training_data=props.get("training_data", ""),
                weights_sha256=props.get("weights_sha256", ""),
                fnac_version=props.get("fnac_version", ""),
                precision=props.get("precision", "fp32"),
                heatmap_size=optional("heatmap_size", int),
                ogl_alpha=optional("ogl_alpha", float),
                spectrogram=json.loads(props["spectrogram"]) if props.get("spectrogram") else {},
                sounding_calibration=_json_object(props.get("sounding_calibration", ""), source),
                raw=dict(props),
            )
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{source}: malformed metadata_props: {exc}") from None


def _json_object(text: str, source: str) -> dict | None:
    """An informational JSON field: absent or unreadable is None (logged), never a reason not to serve."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.warning("%s: metadata sounding_calibration is not a JSON object; ignored", source)
        return None
    return value


def gpu_visible() -> bool:
    """True when an NVIDIA GPU is really there and not hidden by CUDA_VISIBLE_DEVICES."""
    return gpu.detect_gpu().visible


def choose_providers(requested: list[str] | None = None) -> list[str]:
    """Providers to ask ONNX Runtime for: the requested ones (short names allowed), or auto (none requested, or
    just "auto", as `--providers auto` and FNAC_PROVIDERS=auto say)."""
    available = ort.get_available_providers()
    requested = contract.parse_providers(requested)
    if requested:
        chosen = [_PROVIDER_NAMES.get(name.lower(), name) for name in requested]
        unknown = [name for name in chosen if name not in available]
        if unknown:
            raise ModelError(f"providers {unknown} are not available in this onnxruntime build ({available})")
        return chosen
    chosen = []
    if gpu_visible():
        # TensorRT only when its library is installed; otherwise ORT logs an error for every session.
        if "TensorrtExecutionProvider" in available and gpu.tensorrt_installed():
            chosen.append("TensorrtExecutionProvider")
        if "CUDAExecutionProvider" in available:
            chosen.append("CUDAExecutionProvider")
    return [*chosen, "CPUExecutionProvider"]


class ModelRuntime:
    """Owns one ONNX Runtime session for an FNAC model and runs batches through it."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        providers: list[str] | None = None,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        spinning: bool = True,
        gpu_options: gpu.GpuOptions | None = None,
        io_binding: str = "auto",
    ):
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(
                f"model file {str(path)!r} not found; set FNAC_MODEL (or --model) to an exported .onnx file"
            )
        self.path = path
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        if not spinning:
            # ORT's idle intra-op threads busy-wait for the next op by default, which is fastest when the
            # model has the CPU to itself; in the service they would take cores from decoding and HTTP.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.requested_providers = choose_providers(providers)
        on_gpu = any(p in gpu.GPU_PROVIDERS for p in self.requested_providers)
        if on_gpu:
            for library in gpu.preload_cuda_libraries(gpu.ort_build()):
                log.info("preloaded %s for the CUDA provider", library)
        try:
            with_options = gpu.provider_options(
                self.requested_providers,
                gpu_options or gpu.GpuOptions(),
                gpu.detect_gpu() if on_gpu else None,
            )
        except ValueError as exc:
            raise ModelError(str(exc)) from None
        try:
            self.session = ort.InferenceSession(str(path), options, providers=with_options)
        except Exception as exc:  # ORT raises its own exception types for unreadable graphs
            raise ModelError(f"could not load model {str(path)!r}: {exc}") from None
        # What actually loaded, not what was asked for: ORT falls back to CPU with only a log line.
        self.providers = self.session.get_providers()
        fallback = [p for p in self.requested_providers if p not in self.providers]
        if fallback:
            log.warning(
                "execution providers %s requested but not loaded; running on %s", fallback, self.providers
            )
        log.info("model %s loaded with providers %s", path.name, self.providers)

        self.metadata = ModelMetadata.from_props(self.session.get_modelmeta().custom_metadata_map, str(path))
        self._check_signature()
        self.file_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        self.warmed_up = False
        # IO binding: inputs copied to the device once, outputs written straight to host memory. On the CPU
        # provider plain run() is already copy-free, so auto binds only for a GPU provider.
        device_id = (gpu_options or gpu.GpuOptions()).device_id
        if io_binding == "on" or (io_binding == "auto" and self.on_gpu):
            self._bind_device = ("cuda", device_id) if self.on_gpu else ("cpu", 0)
        else:
            self._bind_device = None

    @property
    def model_id(self) -> str:
        digest = self.metadata.weights_sha256 or self.file_sha256
        return f"{self.metadata.model_name}@{digest[:12]}"

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] != "CPUExecutionProvider"

    def _check_signature(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        expected = contract.INPUTS
        for name, (dtype, rank) in expected.items():
            if name not in inputs or inputs[name].type != dtype or len(inputs[name].shape) != rank:
                raise ModelError(
                    f"{self.path}: input {name!r} must be {dtype} of rank {rank} (docs/CONTRACT.md)"
                )
        if not set(contract.OUTPUTS) <= outputs:
            raise ModelError(
                f"{self.path}: outputs must include 'heatmap' and 'score', found {sorted(outputs)}"
            )
        # OGL: the objectness output and the fusion weight come together or not at all.
        self.has_objectness = contract.OGL_OUTPUT in outputs
        alpha = self.metadata.ogl_alpha
        if self.has_objectness != (alpha is not None):
            raise ModelError(
                f"{self.path}: an 'objectness' output and metadata ogl_alpha go together (docs/CONTRACT.md); "
                f"this model has {'the output' if self.has_objectness else 'ogl_alpha'} only"
            )
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ModelError(f"{self.path}: metadata ogl_alpha must be between 0 and 1, not {alpha:g}")

    def run(self, images: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images uint8 [B, S, S, 3], audio float32 [B, N] -> heatmap float32 [B, h, w], score float32 [B]."""
        if self._bind_device is None:
            heatmap, score = self.session.run(["heatmap", "score"], {"image": images, "audio": audio})
            return heatmap, score
        device, device_id = self._bind_device
        binding = self.session.io_binding()  # one per call: batches may run in several lanes at once
        for name, array in (("image", images), ("audio", audio)):
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, device, device_id))
        for name in ("heatmap", "score"):
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        heatmap, score = binding.copy_outputs_to_cpu()
        return heatmap, score

    def run_maps(
        self, images: np.ndarray, audio: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Like `run`, plus the OGL objectness map float32 [B, h, w] of a model exported with an object branch
        (None for any other model)."""
        if not self.has_objectness:
            return (*self.run(images, audio), None)
        heatmap, score, objectness = self.session.run(
            ["heatmap", "score", "objectness"], {"image": images, "audio": audio}
        )
        return heatmap, score, objectness

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run zeros through the graph once per batch size so the first request pays no set-up cost."""
        size, n = self.metadata.image_size, self.metadata.n_samples
        for batch in batch_sizes:
            self.run(np.zeros((batch, size, size, 3), np.uint8), np.zeros((batch, n), np.float32))
        self.warmed_up = True
