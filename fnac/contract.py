"""The facts several packages share, each stated once: the names of the ONNX contract, the dataset vocabulary,
and the defaults of post-processing. Standard library only, so any package may import it.

docs/CONTRACT.md describes the same names for people; tests/test_contract.py checks that the two agree and
that an exported model carries no metadata key that is not listed here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# ---------------------------------------------------------------------------------------------- ONNX model

FORMAT_VERSION = "1"  # fnac_format_version: bumped when the graph's interface changes incompatibly

# Graph inputs, name -> (ONNX type, rank): image uint8 [B, S, S, 3] RGB, audio float32 [B, N] mono in [-1, 1].
INPUTS = {"image": ("tensor(uint8)", 4), "audio": ("tensor(float)", 2)}
OUTPUTS = ("heatmap", "score")  # every model: [B, h, w] cosine / tau, and [B] the best raw cosine
OGL_OUTPUT = "objectness"  # only with an object-guided branch, together with the ogl_alpha metadata key

# metadata_props: without the required ones nothing downstream can prepare inputs or read outputs.
REQUIRED_METADATA = ("fnac_format_version", "sample_rate", "clip_seconds", "image_size", "tau")
OPTIONAL_METADATA = (
    "spectrogram",
    "heatmap_size",
    "sounding_threshold",
    "sounding_calibration",
    "ogl_alpha",
    "ogl_weights_sha256",
    "model_name",
    "training_data",
    "weights_sha256",
    "fnac_version",
    "precision",
    "model_config",
)
METADATA_KEYS = REQUIRED_METADATA + OPTIONAL_METADATA
PRECISIONS = ("fp32", "fp16", "int8")

# ---------------------------------------------------------------------------------------------- datasets

SPLITS = ("train", "val", "test")
NEGATIVE_KINDS = ("silence", "noise", "offscreen")  # negatives/<kind>/<id>.wav beside a dataset's audio/

# ---------------------------------------------------------------------------------------------- decisions

SILENCE_DBFS = -60.0  # audio at or below this RMS level is never `sounding` (FFmpeg's silencedetect default)
FALLBACK_SOUNDING_THRESHOLD = 0.5  # raw cosine, for models without a calibrated sounding_threshold
BOX_THRESHOLD = 0.5  # boxes surround the min-max normalised map at or above this
BOX_MIN_AREA = 0.005  # smallest box component, as a fraction of the frame
MAX_WINDOWS = 1000  # windows of one sweep offline (fnac score, the Python API)
MAX_WINDOWS_PER_REQUEST = 128  # the service's default (FNAC_MAX_WINDOWS): uploads are untrusted


def default_model_path() -> Path:
    """The model bundled with the package (`service/models/default.onnx`): what `fnac serve`, `fnac score` and
    `fnac.Localizer` run when given no model."""
    return Path(str(resources.files("service").joinpath("models", "default.onnx")))


def parse_providers(value: str | list[str] | None) -> list[str] | None:
    """ONNX Runtime providers as given on a command line or in FNAC_PROVIDERS ("cuda,cpu", or a list), or None
    for the automatic choice: nothing given, or "auto"."""
    names = value.split(",") if isinstance(value, str) else list(value or [])
    names = [name.strip() for name in names if name.strip()]
    return None if not names or [name.lower() for name in names] == ["auto"] else names
