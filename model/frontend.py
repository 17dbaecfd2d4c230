"""Preprocessing that must be identical in training and serving, written as torch modules so it lives inside
the exported ONNX graph."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def tukey_window(length: int, alpha: float = 0.25) -> np.ndarray:
    """Periodic Tukey window, equal to scipy.signal.get_window(("tukey", alpha), length) (scipy's default for
    spectrograms is the DFT-even, i.e. periodic, window)."""
    # A periodic window of length L is the symmetric window of length L + 1 without its last sample.
    n = length + 1
    x = np.arange(n, dtype=np.float64)
    width = int(np.floor(alpha * (n - 1) / 2.0))
    window = np.ones(n)
    rise = x[: width + 1]
    window[: width + 1] = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * rise / alpha / (n - 1))))
    fall = x[n - width - 1 :]
    window[n - width - 1 :] = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * fall / alpha / (n - 1))))
    return window[:length]


class LogSpectrogram(nn.Module):
    """Waveform [B, N] → log power spectrogram ÷ scale [B, 1, F, T], F = nperseg // 2 + 1.

    Equal to ``log(scipy.signal.spectrogram(x, fs, nperseg, noverlap)[2] + eps) / scale`` with scipy's defaults
    (periodic Tukey(0.25) window, constant detrend per segment, one-sided density scaling). Every step up to
    the squared magnitude is linear in the samples, so detrend, window and DFT fold into one fixed conv1d with
    cosine and sine kernels; then square, sum, scale and log. No FFT op is needed, so it exports to any ONNX
    execution provider.
    """

    def __init__(
        self,
        sample_rate: int,
        nperseg: int = 512,
        noverlap: int = 274,
        eps: float = 1e-7,
        scale: float = 12.0,
    ):
        super().__init__()
        self.hop = nperseg - noverlap
        self.eps = eps
        self.scale = scale
        window = tukey_window(nperseg, 0.25)
        n_freq = nperseg // 2 + 1
        k = np.arange(nperseg)
        f = np.arange(n_freq)[:, None]
        angle = 2.0 * np.pi * f * k[None, :] / nperseg
        cos_kernel = np.cos(angle) * window
        sin_kernel = -np.sin(angle) * window
        # Constant detrend: X(f) = Σ_k c_fk·w_k·(x_k − mean(x)) = Σ_k x_k·(c_fk·w_k − mean_j(c_fj·w_j)).
        cos_kernel -= cos_kernel.mean(axis=1, keepdims=True)
        sin_kernel -= sin_kernel.mean(axis=1, keepdims=True)
        kernel = np.concatenate([cos_kernel, sin_kernel])[:, None, :]  # [2F, 1, nperseg]
        # Density scaling of a one-sided spectrum: 1 / (fs · Σw²), doubled except at DC and (even n) Nyquist.
        power_scale = np.full(n_freq, 2.0 / (sample_rate * np.sum(window**2)))
        power_scale[0] /= 2.0
        if nperseg % 2 == 0:
            power_scale[-1] /= 2.0
        self.n_freq = n_freq
        self.register_buffer("kernel", torch.tensor(kernel, dtype=torch.float32), persistent=False)
        self.register_buffer(
            "power_scale", torch.tensor(power_scale, dtype=torch.float32)[:, None], persistent=False
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        parts = nn.functional.conv1d(waveform[:, None, :], self.kernel, stride=self.hop)  # [B, 2F, T]
        real, imag = parts[:, : self.n_freq], parts[:, self.n_freq :]
        power = (real * real + imag * imag) * self.power_scale
        return (torch.log(power + self.eps) / self.scale)[:, None]  # [B, 1, F, T]


class ImageNormalize(nn.Module):
    """uint8 RGB [B, H, W, 3] → ImageNet-normalised float [B, 3, H, W]."""

    def __init__(self):
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("inv_std", 1.0 / std, persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float32)
        # (x - mean) / std as a per-channel 1x1 convolution (scale as weight, shift as bias), not as a
        # broadcast Sub and Mul: in an int8 graph ONNX Runtime runs the quantized trunk channels-last and
        # moves the permute past elementwise ops, which then broadcast over an innermost axis of 3, about
        # 9x slower than the same arithmetic on planes (a visible part of a batch-1 int8 run); a convolution
        # keeps the permute in front of it. Same numbers up to float rounding (docs/BENCHMARKS.md).
        weight = self.inv_std.reshape(3, 1, 1, 1)
        bias = (-self.mean * self.inv_std).reshape(3)
        # contiguous NCHW: the permuted (channels-last) layout makes torch 2.14's CPU conv backward crash
        # (double free) for narrow trunks (width ≤ 8) at 224 px; a no-op in the ONNX graph.
        return nn.functional.conv2d(x, weight, bias, groups=3).contiguous()


def spectrogram_frames(n_samples: int, nperseg: int, noverlap: int) -> int:
    return math.floor((n_samples - nperseg) / (nperseg - noverlap)) + 1
