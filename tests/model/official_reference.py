"""An independent rebuild of the official FNAC/EZ-VSL network and inference preprocessing, straight from
torchvision and scipy (as the research code does it), to check our network against."""

import argparse

import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F
import torchvision
from torch import nn


class OfficialStyleFNAC(nn.Module):
    def __init__(self, dim=512, tau=0.03):
        super().__init__()
        self.tau = tau
        self.imgnet = torchvision.models.resnet18()
        self.imgnet.avgpool = nn.Identity()
        self.imgnet.fc = nn.Identity()
        self.img_proj = nn.Conv2d(512, dim, kernel_size=(1, 1))
        self.audnet = torchvision.models.resnet18()
        self.audnet.conv1 = nn.Conv2d(1, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False)
        self.audnet.avgpool = nn.AdaptiveMaxPool2d((1, 1))
        self.audnet.fc = nn.Identity()
        self.aud_proj = nn.Linear(512, dim)
        # Non-trivial BN statistics so eval-mode normalisation is exercised.
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)

    def forward(self, image, spec):
        img = self.imgnet(image).unflatten(1, (512, 7, 7))
        img = F.normalize(self.img_proj(img), dim=1)
        aud = F.normalize(self.aud_proj(self.audnet(spec)), dim=1)
        return torch.einsum("ncqa,nc->nqa", img, aud) / self.tau  # the localization map S[n, n]


def official_preprocess(image_uint8: np.ndarray, waveform: np.ndarray, sample_rate: int):
    """ToTensor + Normalize on the (already 224×224) frame; scipy log spectrogram ÷ 12 on the audio."""
    img = torch.from_numpy(image_uint8).permute(2, 0, 1).float() / 255.0
    img = torchvision.transforms.functional.normalize(img, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    _, _, power = scipy.signal.spectrogram(waveform, sample_rate, nperseg=512, noverlap=274)
    spec = torch.tensor(np.log(power + 1e-7), dtype=torch.float32)[None] / 12.0
    return img, spec


def official_checkpoint(model: OfficialStyleFNAC, ddp_prefix: bool = True) -> dict:
    """The layout of released .pth files: {'model': state_dict, 'optimizer', 'epoch', 'args'}."""
    prefix = "module." if ddp_prefix else ""
    state = {prefix + k: v for k, v in model.state_dict().items()}
    return {
        "model": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
        "epoch": 20,
        "args": argparse.Namespace(tau=0.03, out_dim=512, trainset="vggss"),
    }
