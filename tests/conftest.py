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
