"""The FNAC network (Sun et al., CVPR 2023; architecture of EZ-VSL), read top to bottom.

Parameter names follow the official release (`imgnet.*`, `img_proj.*`, `audnet.*`, `aud_proj.*`), so its
checkpoints load unchanged. Preprocessing modules carry no persistent state and do not change those names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from model.config import FNACConfig
from model.frontend import ImageNormalize, LogSpectrogram


class ResNet18Trunk(nn.Module):
    """torchvision's ResNet-18 up to layer4 (same blocks, same parameter names), with a base-width knob.

    width=64 is torchvision's resnet18; `pool` replaces avgpool (None keeps the spatial map).
    """

    def __init__(self, in_channels: int = 3, width: int = 64, pool: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.inplanes = width
        self.layer1 = self._make_layer(width, stride=1)
        self.layer2 = self._make_layer(width * 2, stride=2)
        self.layer3 = self._make_layer(width * 4, stride=2)
        self.layer4 = self._make_layer(width * 8, stride=2)
        self.pool = pool
        self.out_channels = width * 8

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        blocks = [BasicBlock(self.inplanes, planes, stride, downsample), BasicBlock(planes, planes)]
        self.inplanes = planes
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [B, 8w, H/32, W/32]
        if self.pool is not None:
            x = self.pool(x).flatten(1)  # [B, 8w]
        return x


class FNAC(nn.Module):
    """Two ResNet-18 encoders mapping a frame to a unit-norm feature map and a clip to a unit-norm vector.

    Inputs are raw: image uint8 [B, S, S, 3] RGB, audio float32 [B, N] mono waveform in [-1, 1]. Normalisation
    and the log spectrogram run inside, so training, evaluation and the ONNX graph share one implementation.
    """

    def __init__(self, config: FNACConfig | None = None):
        super().__init__()
        self.config = config = config or FNACConfig()
        self.normalize = ImageNormalize()
        self.spectrogram = LogSpectrogram(
            config.sample_rate, config.nperseg, config.noverlap, config.spec_eps, config.spec_scale
        )
        self.imgnet = ResNet18Trunk(3, config.width)
        self.img_dropout = nn.Dropout(config.dropout_img)
        self.img_proj = nn.Conv2d(self.imgnet.out_channels, config.dim, kernel_size=1)
        self.audnet = ResNet18Trunk(1, config.width, pool=nn.AdaptiveMaxPool2d(1))
        self.aud_dropout = nn.Dropout(config.dropout_aud)
        self.aud_proj = nn.Linear(self.audnet.out_channels, config.dim)
        # The official code leaves the (ImageNet-pretrained) visual trunk alone and initialises the rest; with
        # no pretrained file at hand the visual trunk gets the same initialisation.
        for part in (self.imgnet, self.audnet, self.img_proj, self.aud_proj):
            init_weights(part)

    @property
    def tau(self) -> float:
        return self.config.tau

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 [B, S, S, 3] → L2-normalised visual map [B, D, h, w]."""
        return self.encode_normalized(self.normalize(image))

    def encode_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised float [B, 3, S, S] → L2-normalised visual map [B, D, h, w]."""
        v = self.imgnet(x.to(self.img_proj.weight.dtype))  # [B, 8w, h, w]; trunks may run in half precision
        v = self.img_proj(self.img_dropout(v))  # [B, D, h, w]
        return F.normalize(v.float(), dim=1)

    def encode_spectrogram(self, spec: torch.Tensor) -> torch.Tensor:
        """log spectrogram [B, 1, F, T] → L2-normalised audio embedding [B, D]."""
        a = self.audnet(spec.to(self.aud_proj.weight.dtype))  # [B, 8w]
        a = self.aud_proj(self.aud_dropout(a))  # [B, D]
        return F.normalize(a.float(), dim=1)

    def forward(
        self,
        image: torch.Tensor,
        audio: torch.Tensor,
        spec_augment: nn.Module | None = None,
        objectness: nn.Module | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Returns (v [B, D, h, w], a [B, D]). `spec_augment` (training only) edits the spectrogram.

        `objectness` (OGL, model/ogl.py; not a part of this network) is run on the same normalised image and
        its map appended: (v, a, objectness [B, h, w]).
        """
        spec = self.spectrogram(audio)  # [B, 1, F, T]
        if spec_augment is not None:
            spec = spec_augment(spec)
        x = self.normalize(image)  # [B, 3, S, S]
        v, a = self.encode_normalized(x), self.encode_spectrogram(spec)
        return (v, a) if objectness is None else (v, a, objectness(x))


def similarity(v: torch.Tensor, a: torch.Tensor, tau: float) -> torch.Tensor:
    """S[n, m, h, w] = <v[n, :, h, w], a[m]> / τ for every image n and every audio m."""
    return torch.einsum("ndhw,md->nmhw", v, a) / tau


def localization_map(v: torch.Tensor, a: torch.Tensor, tau: float) -> torch.Tensor:
    """S[n, n]: each image against its own audio, [B, h, w]."""
    return torch.einsum("ndhw,nd->nhw", v, a) / tau


class FNACLocalizer(nn.Module):
    """What gets exported: raw image + waveform → (heatmap [B, h, w], score [B]), plus objectness [B, h, w]
    when an object branch (OGL, model/ogl.py) is given; it sees the same normalised image as the visual
    encoder."""

    def __init__(self, fnac: FNAC, objectness: nn.Module | None = None):
        super().__init__()
        self.fnac = fnac
        self.objectness = objectness

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        v, a, *objectness = self.fnac(image, audio, objectness=self.objectness)
        heatmap = localization_map(v, a, self.fnac.tau)  # [B, h, w]
        score = heatmap.flatten(1).amax(dim=1) * self.fnac.tau  # [B], raw cosine
        return (heatmap, score, *objectness)


def init_weights(module: nn.Module) -> None:
    """The official initialisation of the parts trained from scratch."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.normal_(m.weight, mean=1.0, std=0.02)
            nn.init.constant_(m.bias, 0.0)
