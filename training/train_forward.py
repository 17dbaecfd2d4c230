"""The training forward pass: the model's front end in fp32, spectrogram masks, both encoders under autocast."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from model.fnac import FNAC


class SpecAugment(nn.Module):
    """One frequency mask and one time mask per example (iid over the batch), each of width < 10 bins, 0-filled.

    Applied to the model's log spectrogram [B, 1, F, T] after its ÷12 scaling, which is the same as masking
    before it since the fill value is 0.
    """

    def __init__(self, freq_mask: int = 10, time_mask: int = 10):
        super().__init__()
        import torchaudio.transforms as T

        self.freq = T.FrequencyMasking(freq_mask, iid_masks=True)
        self.time = T.TimeMasking(time_mask, iid_masks=True)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.time(self.freq(spec))


class TrainForward(nn.Module):
    """What DDP wraps: the front end in fp32 (a spectrogram in bf16 would lose the log's precision), spec masks,
    then both encoders under autocast; returns fp32 (v [B, D, h, w], a [B, D])."""

    def __init__(self, fnac: FNAC, spec_augment: nn.Module | None, amp_dtype: torch.dtype | None):
        super().__init__()
        self.fnac = fnac
        self.spec_augment = spec_augment
        self.amp_dtype = amp_dtype

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.fnac.spectrogram(audio.float())  # [B, 1, F, T]
        if self.training and self.spec_augment is not None:
            spec = self.spec_augment(spec)
        with autocast(image.device, self.amp_dtype):
            v = self.fnac.encode_image(image)
            a = self.fnac.encode_spectrogram(spec)
        return v.float(), a.float()


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast on `device` in `dtype`, or nothing when `dtype` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def resolve_amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--amp` on `device` (None: fp32)."""
    if device.type != "cuda" or amp == "off":
        return None  # AMP on GPU only
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
