"""Object-guided localization (OGL): the object branch of the official FNAC evaluation.

A frozen ImageNet ResNet-18 (torchvision's, avgpool and fc removed) looks at the same normalised image as the
visual encoder; the mean over its 512 channels of |layer4| (7×7 at 224 px) is an "objectness" map. The
official test.py fuses it with the audio-visual map as normalise(α·normalise(AV) + (1−α)·normalise(OBJ)),
α = 0.4; the fusion itself happens after the network (it needs both maps upsampled), so this module only
computes OBJ.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from model.checkpoint import CheckpointError
from model.fnac import ResNet18Trunk

DEFAULT_ALPHA = 0.4  # the official test.py's --alpha
# Parameters of torchvision's resnet18 that the object branch does not use (the classifier head).
HEAD_KEYS = frozenset({"fc.weight", "fc.bias"})


class ObjectnessBranch(nn.Module):
    """Normalised image [B, 3, S, S] → objectness [B, S/32, S/32] = mean over channels of |layer4|.

    The trunk is torchvision's ResNet-18 with the same parameter names (conv1, bn1, layer1…layer4), so a
    torchvision state dict loads into it unchanged. Frozen: always in eval mode, no gradients.
    """

    def __init__(self):
        super().__init__()
        self.trunk = ResNet18Trunk(3, width=64)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ObjectnessBranch:
        # Frozen means frozen: BatchNorm keeps its ImageNet statistics even inside a model put in train mode.
        return super().train(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.trunk(image.to(self.trunk.conv1.weight.dtype))  # [B, 512, S/32, S/32]
        return features.abs().mean(dim=1).float()  # [B, S/32, S/32]


def load_objectness_weights(path: str | os.PathLike) -> ObjectnessBranch:
    """Build the object branch from a torchvision ResNet-18 state dict file.

    The file is what ``torch.save(torchvision.models.resnet18(weights="IMAGENET1K_V1").state_dict(), path)``
    writes (keys may carry a ``module.`` prefix; the fc head is ignored). Every trunk parameter must be present
    with torchvision's shape and nothing else may be there: a ResNet-34/50 or an FNAC checkpoint is refused by
    name, not half-loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"OGL weights file not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]  # torch's messages run over many lines
        raise CheckpointError(
            f"{path} is not a readable state dict ({type(exc).__name__}: {reason}); expected the torchvision "
            "ResNet-18 state dict saved with torch.save(model.state_dict(), path)"
        ) from exc
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        hint = " (an FNAC checkpoint? OGL needs the ImageNet ResNet-18)" if isinstance(raw, dict) else ""
        raise CheckpointError(f"{path} is not a bare state dict of tensors{hint}")
    state = {key.removeprefix("module."): value for key, value in raw.items()}
    branch = ObjectnessBranch()
    expected = branch.trunk.state_dict()
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected and k not in HEAD_KEYS)
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"{len(missing)} ResNet-18 parameters missing ({_first(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected entries ({_first(unexpected)})")
        raise CheckpointError(f"{path} is not a torchvision ResNet-18 state dict: {'; '.join(problems)}")
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs ResNet-18 {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if mismatched:
        raise CheckpointError(f"{path}: shape mismatch: {'; '.join(mismatched[:4])}")
    trunk_state = {k: state[k].float() if state[k].is_floating_point() else state[k] for k in expected}
    branch.trunk.load_state_dict(trunk_state, strict=True)
    return branch


def _first(names: list[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (", …" if len(names) > shown else "")
