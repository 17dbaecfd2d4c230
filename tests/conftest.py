"""Shared fixtures: tiny FNAC networks and their ONNX exports, generated (never downloaded)."""

from __future__ import annotations

import pytest

TINY = {"width": 8, "dim": 32, "image_size": 64}


@pytest.fixture(scope="session")
def tiny_config():
    from model.config import FNACConfig

    return FNACConfig(**TINY)


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    import torch

    from model.fnac import FNAC

    torch.manual_seed(1234)
    return FNAC(tiny_config).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory):
    from model.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, tiny_model, {"model_name": "tiny-test", "training_data": "random init"})
    return path


@pytest.fixture(scope="session")
def tiny_onnx_model(tiny_model, tmp_path_factory):
    """A small exported FNAC model honouring docs/CONTRACT.md (64 px input, 2×2 heatmap, 16 kHz, 3 s)."""
    from model.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(tiny_model, path, {"model_name": "tiny-test", "sounding_threshold": 0.5})
    return path


@pytest.fixture(scope="session")
def resnet18_weights(tmp_path_factory):
    """A randomly initialised torchvision ResNet-18 saved as a state dict, standing in for the ImageNet file
    (`torchvision.models.resnet18(weights="IMAGENET1K_V1").state_dict()`); BatchNorm statistics are random too,
    so a wrong layer order or a forgotten eval() would show."""
    import torch
    import torchvision

    torch.manual_seed(17)
    resnet = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for module in resnet.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    path = tmp_path_factory.mktemp("ogl") / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_ogl_onnx_model(tiny_model, resnet18_weights, tmp_path_factory):
    """The tiny model exported with the OGL object branch (α = 0.4), as `fnac export --ogl-weights` does."""
    from model.export import export_onnx
    from model.ogl import load_objectness_weights

    path = tmp_path_factory.mktemp("onnx") / "tiny-ogl.onnx"
    export_onnx(
        tiny_model,
        path,
        {"model_name": "tiny-ogl", "sounding_threshold": 0.5},
        objectness=load_objectness_weights(resnet18_weights),
        ogl_alpha=0.4,
    )
    return path
