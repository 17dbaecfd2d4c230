"""Export an FNAC network to the self-describing ONNX artifact of docs/CONTRACT.md, and verify it.

The artifact takes raw inputs (uint8 image, float waveform) and returns (heatmap, score), plus `objectness`
when it carries the OGL object branch (model/ogl.py); preprocessing lives in the graph. Every export is checked
against torch with ONNX Runtime before the file is written.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fnac import contract
from fnac.errors import FnacError
from model.atomic import atomic_path
from model.checkpoint import package_version, weights_sha256
from model.config import FNACConfig
from model.fnac import FNAC, FNACLocalizer
from model.ogl import DEFAULT_ALPHA, ObjectnessBranch

log = logging.getLogger(__name__)

ONNX_FORMAT_VERSION = contract.FORMAT_VERSION
OPSET = 17
# Parity bound of docs/CONTRACT.md: max |ORT − torch| on the heatmap relative to the heatmap's range.
FP32_TOLERANCE = 1e-4
# Reduced precision is judged by agreement of the maps, not by a bit-level bound.
REDUCED_MIN_CORRELATION = 0.99
# fp16 trunks (fp32 front end and head) also keep every heatmap value within 1 % of the fp32 heatmap's range
# and every score within 0.01 of fp32: measured 1.1e-3-1.4e-3 and 2e-4 on random 112- and 224-px networks.
FP16_TOLERANCE = 1e-2
FP16_SCORE_TOLERANCE = 1e-2
# Graph scopes kept in float at int8: input normalisation and the audio front end (a log of powers as small as
# 1e-10). Nodes outside /fnac/ (the final similarity and max) stay in float too. The OGL object branch
# (/fnac/objectness/) is quantized like the visual trunk, calibrated on the same images, and held to the same
# correlation bound.
FLOAT_SCOPES = ("/fnac/spectrogram/", "/fnac/normalize/")


class ExportError(FnacError, RuntimeError):
    """The exported graph does not reproduce the torch network; nothing was written."""


@dataclass
class Parity:
    """How an exported graph compares with its reference on the same inputs."""

    batch_sizes: list[int] = field(default_factory=list)
    max_abs_diff: float = 0.0  # on the heatmap
    relative_diff: float = 0.0  # max_abs_diff / heatmap range
    score_max_abs_diff: float = 0.0
    correlation: float = 1.0  # Pearson correlation of heatmaps, all samples pooled
    argmax_agreement: float = 1.0  # fraction of samples whose hottest cell is the same
    # The same for the OGL objectness map; None when the model has no object branch.
    objectness_max_abs_diff: float | None = None
    objectness_relative_diff: float | None = None
    objectness_correlation: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def model_metadata(config: FNACConfig, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The metadata_props of the ONNX contract, from the model config and checkpoint metadata."""
    meta: dict[str, Any] = {
        "fnac_format_version": ONNX_FORMAT_VERSION,
        "sample_rate": config.sample_rate,
        "clip_seconds": config.clip_seconds,
        "image_size": config.image_size,
        "heatmap_size": config.heatmap_size,
        "tau": config.tau,
        "spectrogram": json.dumps(
            {
                "nperseg": config.nperseg,
                "noverlap": config.noverlap,
                "scale": config.spec_scale,
                "eps": config.spec_eps,
                "window": "tukey0.25",
            }
        ),
        "fnac_version": package_version(),
        "precision": "fp32",
        "model_config": json.dumps(config.to_dict()),
    }
    for key, value in (extra or {}).items():
        if value is None:
            continue
        meta[key] = json.dumps(value) if isinstance(value, dict | list) else value
    return {k: str(v) for k, v in meta.items()}


def example_inputs(config: FNACConfig, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic inputs with some structure (smooth image, tone + noise audio) for parity checks."""
    rng = np.random.default_rng(seed)
    s = config.image_size
    yy, xx = np.mgrid[0:s, 0:s] / s
    images = []
    for _ in range(batch):
        phase = rng.uniform(0, 2 * np.pi, 3)
        base = 127 + 100 * np.sin(2 * np.pi * (xx[..., None] * rng.uniform(0.5, 3)) + phase)
        base = base + rng.normal(0, 20, (s, s, 3)) + 60 * (yy[..., None] > rng.uniform(0.2, 0.8))
        images.append(np.clip(base, 0, 255).astype(np.uint8))
    t = np.arange(config.n_samples) / config.sample_rate
    freqs = rng.uniform(100, 2000, (batch, 1))
    audio = 0.4 * np.sin(2 * np.pi * freqs * t) + 0.1 * rng.standard_normal((batch, config.n_samples))
    return np.stack(images), np.clip(audio, -1, 1).astype(np.float32)


def _map_agreement(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float, float]:
    """(max |difference|, that over the reference's range, Pearson correlation) of two stacks of maps."""
    diff = float(np.abs(reference - candidate).max())
    span = float(reference.max() - reference.min()) or 1.0
    corr = float(np.corrcoef(reference.ravel(), candidate.ravel())[0, 1]) if reference.size > 1 else 1.0
    return diff, diff / span, corr


def compare(reference: tuple[np.ndarray, ...], candidate: tuple[np.ndarray, ...]) -> Parity:
    """Parity of (heatmap, score[, objectness]) outputs: the candidate against the reference."""
    ref_h, ref_s = reference[:2]
    cand_h, cand_s = candidate[:2]
    diff, relative, corr = _map_agreement(ref_h, cand_h)
    agree = float(
        np.mean(ref_h.reshape(len(ref_h), -1).argmax(1) == cand_h.reshape(len(cand_h), -1).argmax(1))
    )
    parity = Parity(
        max_abs_diff=diff,
        relative_diff=relative,
        score_max_abs_diff=float(np.abs(ref_s - cand_s).max()),
        correlation=corr,
        argmax_agreement=agree,
    )
    if len(reference) > 2:
        if len(candidate) < 3:
            raise ExportError(
                "the exported graph has no 'objectness' output although an OGL branch was given"
            )
        (
            parity.objectness_max_abs_diff,
            parity.objectness_relative_diff,
            parity.objectness_correlation,
        ) = _map_agreement(reference[2], candidate[2])
    return parity


def ort_session(model, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0):
    """An ONNX Runtime session on an .onnx path or an in-memory ModelProto."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=list(providers))


def run_torch(
    model: FNAC, images: np.ndarray, audio: np.ndarray, objectness: ObjectnessBranch | None = None
) -> tuple[np.ndarray, ...]:
    """(heatmap, score), plus objectness with an object branch, from the torch network."""
    localizer = FNACLocalizer(model, objectness).eval()
    with torch.no_grad():
        outputs = localizer(torch.from_numpy(images), torch.from_numpy(audio))
    return tuple(output.float().numpy() for output in outputs)


def run_onnx(session, images: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, ...]:
    """(heatmap, score), plus objectness when the graph has that output, from an ONNX Runtime session."""
    names = ["heatmap", "score"]
    if "objectness" in {o.name for o in session.get_outputs()}:
        names.append("objectness")
    outputs = session.run(names, {"image": images, "audio": audio})
    return tuple(output.astype(np.float32) for output in outputs)


def write_onnx(proto, path: Path) -> None:
    """Save a ModelProto atomically (a reader never sees a partial model)."""
    import onnx

    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


def set_metadata(proto, metadata: dict[str, str]) -> None:
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in metadata.items():
        if key in existing:
            existing[key].value = value
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def export_fp32_proto(model: FNAC, metadata: dict[str, str], objectness: ObjectnessBranch | None = None):
    """Trace the network (and the object branch, if given) into an ONNX ModelProto (in memory) with a dynamic
    batch axis (fp32 inputs and outputs whatever the precision of the trunks)."""
    import onnx

    config = model.config
    localizer = FNACLocalizer(model, objectness).eval()
    images, audio = example_inputs(config, batch=2)
    output_names = ["heatmap", "score"] + (["objectness"] if objectness is not None else [])
    dynamic = {name: {0: "batch"} for name in ("image", "audio", *output_names)}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The TorchScript exporter is the one that keeps module scopes in node names (used to keep the audio
        # front end out of quantization) and exports this static graph exactly; silence its deprecation note.
        warnings.simplefilter("ignore")
        tmp_path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            localizer,
            (torch.from_numpy(images), torch.from_numpy(audio)),
            str(tmp_path),
            input_names=["image", "audio"],
            output_names=output_names,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
        proto = onnx.load(str(tmp_path))
    drop_identities(proto)
    proto.doc_string = (
        "FNAC sound-source localization: (image uint8 [B,S,S,3], audio float32 [B,N]) → "
        + ", ".join(output_names)
    )
    proto.producer_name = "fnac"
    set_metadata(proto, metadata)
    onnx.checker.check_model(proto)
    return proto


def drop_identities(proto) -> None:
    """Remove Identity nodes (the exporter emits them for weights shared by name) by rewiring their consumers;
    reduced-precision converters mishandle them."""
    graph = proto.graph
    outputs = {o.name for o in graph.output}
    rename = {}
    for node in list(graph.node):
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
            graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            while name in rename:
                name = rename[name]
            node.input[i] = name


def verify(
    proto,
    model: FNAC,
    batch_sizes: Iterable[int] = (1, 5),
    providers=("CPUExecutionProvider",),
    objectness: ObjectnessBranch | None = None,
) -> Parity:
    """Run the graph with ONNX Runtime and torch on the same inputs; pooled parity over all batch sizes."""
    session = ort_session(proto, providers)
    refs, cands, sizes = [], [], []
    for i, batch in enumerate(batch_sizes):
        images, audio = example_inputs(model.config, batch, seed=100 + i)
        refs.append(run_torch(model, images, audio, objectness))
        cands.append(run_onnx(session, images, audio))
        sizes.append(batch)
    parity = compare(
        tuple(np.concatenate(outputs) for outputs in zip(*refs, strict=True)),
        tuple(np.concatenate(outputs) for outputs in zip(*cands, strict=True)),
    )
    parity.batch_sizes = sizes
    return parity


def half_precision_copy(model: FNAC) -> FNAC:
    """A copy whose trunks and projections run in fp16 (for GPU providers); image normalisation, the audio
    front end (a log of powers as small as 1e-10) and the final similarity stay in fp32."""
    half = copy.deepcopy(model).eval()
    for part in (half.imgnet, half.img_proj, half.audnet, half.aud_proj):
        part.half()
    return half


def _half_objectness(objectness: ObjectnessBranch | None) -> ObjectnessBranch | None:
    """The object branch's trunk in fp16 (its channel mean of |layer4| comes back in fp32)."""
    return None if objectness is None else copy.deepcopy(objectness).half()


def export_onnx(
    model: FNAC,
    path: str | os.PathLike,
    metadata: dict[str, Any] | None = None,
    *,
    precision: str = "fp32",
    calibration: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    verify_providers: Sequence[str] = ("CPUExecutionProvider",),
    objectness: ObjectnessBranch | None = None,
    ogl_alpha: float = DEFAULT_ALPHA,
) -> Parity:
    """Export, verify against torch and write `path` atomically; returns the measured parity.

    precision: "fp32" (must match torch within 1e-4 of the heatmap range), "fp16" (GPU providers; within 1e-2
    of the range and 1e-2 in score) or "int8" (static per-channel QDQ calibrated on `calibration` batches; for
    the CPU provider). Reduced precisions must keep heatmap correlation ≥ 0.99 with fp32. Raises ExportError
    and writes nothing when a check fails.

    objectness: the OGL object branch (model/ogl.py); the graph then also outputs `objectness`, held to the
    same bounds as the heatmap (at every precision), and the metadata records `ogl_alpha` (the weight of the
    audio-visual map in the fusion) and `ogl_weights_sha256`.
    """
    model = model.eval()
    path = Path(path)
    meta = model_metadata(model.config, metadata)
    meta.setdefault("weights_sha256", weights_sha256(model.state_dict()))
    if objectness is not None:
        if not 0.0 <= ogl_alpha <= 1.0:
            raise ExportError(f"ogl_alpha must be between 0 and 1, not {ogl_alpha:g}")
        objectness = objectness.eval()
        meta["ogl_alpha"] = repr(float(ogl_alpha))
        meta["ogl_weights_sha256"] = weights_sha256(objectness.trunk.state_dict())
    proto = export_fp32_proto(model, meta, objectness=objectness)
    parity = verify(proto, model, objectness=objectness)
    if parity.relative_diff > FP32_TOLERANCE:
        raise ExportError(
            f"ONNX Runtime output differs from torch by {parity.max_abs_diff:.3g} "
            f"({parity.relative_diff:.2e} of the heatmap range > {FP32_TOLERANCE:g}); refusing to write {path}"
        )
    if objectness is not None and parity.objectness_relative_diff > FP32_TOLERANCE:
        raise ExportError(
            f"ONNX Runtime objectness differs from torch by {parity.objectness_max_abs_diff:.3g} "
            f"({parity.objectness_relative_diff:.2e} of its range > {FP32_TOLERANCE:g}); refusing to write {path}"
        )
    if precision == "fp32":
        write_onnx(proto, path)
        return parity
    if precision == "fp16":
        reduced = export_fp32_proto(half_precision_copy(model), meta, objectness=_half_objectness(objectness))
    elif precision == "int8":
        if not calibration:
            raise ExportError("int8 export needs calibration samples (e.g. --calib-data DIR)")
        reduced = quantize_int8(proto, calibration)
    else:
        raise ExportError(f"unknown precision {precision!r}; choose fp32, fp16 or int8")
    set_metadata(reduced, {**meta, "precision": precision})
    try:
        reduced_parity = verify(reduced, model, providers=verify_providers, objectness=objectness)
    except Exception as exc:  # e.g. no fp16 kernels on this provider
        raise ExportError(
            f"cannot run the {precision} graph on {list(verify_providers)} to verify it: {exc}"
        ) from exc
    if reduced_parity.correlation < REDUCED_MIN_CORRELATION:
        raise ExportError(
            f"{precision} heatmaps correlate {reduced_parity.correlation:.4f} with torch "
            f"(< {REDUCED_MIN_CORRELATION}); refusing to write {path}"
        )
    if objectness is not None and reduced_parity.objectness_correlation < REDUCED_MIN_CORRELATION:
        raise ExportError(
            f"{precision} objectness maps correlate {reduced_parity.objectness_correlation:.4f} with torch "
            f"(< {REDUCED_MIN_CORRELATION}); refusing to write {path}"
        )
    if precision == "fp16" and (
        reduced_parity.relative_diff > FP16_TOLERANCE
        or reduced_parity.score_max_abs_diff > FP16_SCORE_TOLERANCE
    ):
        raise ExportError(
            f"fp16 output differs from torch fp32 by {reduced_parity.relative_diff:.2e} of the heatmap range "
            f"(limit {FP16_TOLERANCE:g}) and {reduced_parity.score_max_abs_diff:.2e} in score (limit "
            f"{FP16_SCORE_TOLERANCE:g}); refusing to write {path}"
        )
    write_onnx(reduced, path)
    return reduced_parity


def quantize_int8(proto, calibration: Sequence[tuple[np.ndarray, np.ndarray]]):
    """Static QDQ int8, per-channel weights, calibrated on real (image, audio) batches.

    Dynamic quantization turns convolutions into ConvInteger, which is several times slower on CPU; static QDQ
    lets ONNX Runtime fuse QLinearConv. The audio front end (a log of tiny powers) and the final similarity
    stay in float.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            batch = next(self.batches, None)
            if batch is None:
                return None
            return {"image": batch[0], "audio": batch[1]}

    import onnx

    exclude = [
        n.name for n in proto.graph.node if n.name.startswith(FLOAT_SCOPES) or not n.name.startswith("/fnac/")
    ]
    root_logger = logging.getLogger()
    previous_level = root_logger.level
    root_logger.setLevel(max(previous_level, logging.WARNING))  # the quantizer logs every bias copy at INFO
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src, pre, dst = (Path(tmp) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
            onnx.save(proto, str(src))
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre),
                str(dst),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                # 7-bit weights: x86 CPUs without VNNI (AVX2, AVX-512F) multiply u8 x s8 with an instruction
                # that saturates 16-bit sums; with full-range weights a random tiny network's heatmaps fell to
                # correlation 0.957 with fp32 on such a CPU (0.993 with the reduced range). The exported file
                # must stay faithful on whatever CPU serves it, so the range is reduced everywhere.
                reduce_range=True,
                nodes_to_exclude=exclude,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
            return onnx.load(str(dst))
    finally:
        root_logger.setLevel(previous_level)
