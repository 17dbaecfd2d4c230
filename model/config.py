"""The one description of an FNAC network and its input contract.

Every other place (training, export metadata, the service) reads these values from a checkpoint or an ONNX
file; nothing else hard-codes a sample rate, a clip length, an image size or τ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FNACConfig:
    # Input contract.
    sample_rate: int = 16_000
    clip_seconds: float = 3.0
    image_size: int = 224
    # Log spectrogram, as scipy.signal.spectrogram(x, sr, nperseg, noverlap) then log(· + eps) / scale.
    nperseg: int = 512
    noverlap: int = 274
    spec_eps: float = 1e-7
    spec_scale: float = 12.0
    # Network. width=64 and dim=512 are the paper's ResNet-18s; smaller widths are for CPU experiments.
    width: int = 64
    dim: int = 512
    tau: float = 0.03
    dropout_img: float = 0.9
    dropout_aud: float = 0.0

    @property
    def n_samples(self) -> int:
        """Waveform length the network consumes (48,000 at 16 kHz × 3 s)."""
        return round(self.sample_rate * self.clip_seconds)

    @property
    def n_frames(self) -> int:
        """Spectrogram time bins: floor((N − nperseg) / hop) + 1 (200 at 16 kHz × 3 s)."""
        return (self.n_samples - self.nperseg) // (self.nperseg - self.noverlap) + 1

    @property
    def heatmap_size(self) -> int:
        """Side of the visual map: a ResNet-18 divides by 32 with ceil rounding at each stride-2 stage."""
        size = self.image_size
        for _ in range(5):
            size = (size + 1) // 2
        return size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FNACConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown FNAC config keys: {sorted(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> FNACConfig:
        return dataclasses.replace(self, **changes)
