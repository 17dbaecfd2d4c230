"""The OGL object branch in the exported graph: torchvision's own layer4 computation, refused wrong files."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision

from fnac.cli import main
from model.export import example_inputs, read_metadata


def torchvision_objectness(weights_path, images: np.ndarray) -> np.ndarray:
    """Independent reference: torchvision's resnet18 on the ImageNet-normalised image, mean |layer4|."""
    resnet = torchvision.models.resnet18(weights=None)
    resnet.load_state_dict(torch.load(weights_path, weights_only=True))
    resnet.eval()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = torchvision.transforms.functional.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.no_grad():
        x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
        x = resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x))))
    return x.abs().mean(dim=1).numpy()


def test_export_with_ogl_weights_adds_objectness(
    tmp_path, tiny_checkpoint, tiny_config, tiny_onnx_model, resnet18_weights
):
    out = tmp_path / "ogl.onnx"
    args = ["export", str(tiny_checkpoint), "-o", str(out), "--ogl-weights", str(resnet18_weights)]
    assert main([*args, "--ogl-alpha", "0.3"]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["heatmap", "score", "objectness"]
    meta = read_metadata(out)
    assert float(meta["ogl_alpha"]) == 0.3 and len(meta["ogl_weights_sha256"]) == 64
    for batch, seed in ((1, 5), (4, 6)):
        images, audio = example_inputs(tiny_config, batch, seed)
        heatmap, score, objectness = session.run(None, {"image": images, "audio": audio})
        reference = torchvision_objectness(resnet18_weights, images)
        assert objectness.shape == reference.shape == (batch, 2, 2)
        assert np.abs(objectness - reference).max() <= 1e-4 * (reference.max() - reference.min())
        # The audio-visual outputs are those of the same checkpoint exported without OGL.
        plain = ort.InferenceSession(str(tiny_onnx_model), providers=["CPUExecutionProvider"])
        plain_heatmap, plain_score = plain.run(None, {"image": images, "audio": audio})
        np.testing.assert_allclose(heatmap, plain_heatmap, atol=1e-5)
        np.testing.assert_allclose(score, plain_score, atol=1e-6)


def test_default_alpha_is_the_official_one(tiny_ogl_onnx_model):
    assert float(read_metadata(tiny_ogl_onnx_model)["ogl_alpha"]) == 0.4


def _resnet_state(seed=0, depth=18):
    torch.manual_seed(seed)
    return getattr(torchvision.models, f"resnet{depth}")(weights=None).state_dict()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: torch.save({k: v for k, v in _resnet_state().items() if "layer4.1" not in k}, p),
            "ResNet-18 parameters missing (layer4.1.bn1.bias",
        ),
        (lambda p: torch.save(_resnet_state(depth=34), p), "unexpected entries (layer1.2."),
        (lambda p: torch.save({"model": _resnet_state(), "epoch": 3}, p), "not a bare state dict of tensors"),
        (lambda p: p.write_bytes(b"not a torch file"), "is not a readable state dict"),
        (lambda p: None, "OGL weights file not found"),
    ],
)
def test_wrong_or_incomplete_weights_are_one_clear_error(tmp_path, tiny_checkpoint, capsys, make, message):
    weights = tmp_path / "weights.pth"
    make(weights)
    out = tmp_path / "ogl.onnx"
    assert main(["export", str(tiny_checkpoint), "-o", str(out), "--ogl-weights", str(weights)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_shape_mismatch_is_refused(tmp_path, tiny_checkpoint, capsys):
    state = _resnet_state()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    torch.save(state, tmp_path / "w.pth")
    assert (
        main(
            [
                "export",
                str(tiny_checkpoint),
                "-o",
                str(tmp_path / "o.onnx"),
                "--ogl-weights",
                str(tmp_path / "w.pth"),
            ]
        )
        == 2
    )
    assert "shape mismatch: layer2.0.conv1.weight" in capsys.readouterr().err


def test_alpha_needs_weights_and_a_range(tmp_path, tiny_checkpoint, resnet18_weights, capsys):
    out = str(tmp_path / "o.onnx")
    assert main(["export", str(tiny_checkpoint), "-o", out, "--ogl-alpha", "0.5"]) == 2
    assert "--ogl-alpha needs --ogl-weights" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                str(tiny_checkpoint),
                "-o",
                out,
                "--ogl-weights",
                str(resnet18_weights),
                "--ogl-alpha",
                "1.5",
            ]
        )
        == 2
    )
    assert "between 0 and 1" in capsys.readouterr().err


def test_int8_export_quantizes_the_object_branch_and_checks_it(tmp_path, resnet18_weights):
    import onnx

    from model.config import FNACConfig
    from model.export import export_onnx
    from model.fnac import FNAC
    from model.ogl import load_objectness_weights

    # The network of test_export's int8 test: the smallest random one whose int8 heatmaps stay above the export's
    # 0.99 correlation bar on CPUs with and without VNNI (the 8-wide tiny model sits at 0.976 without VNNI).
    torch.manual_seed(0)
    model = FNAC(FNACConfig(width=16, dim=64, image_size=112)).eval()
    calibration = [example_inputs(model.config, 4, seed=s) for s in range(3)]
    parity = export_onnx(
        model,
        tmp_path / "q.onnx",
        precision="int8",
        calibration=calibration,
        objectness=load_objectness_weights(resnet18_weights),
    )
    assert parity.objectness_correlation >= 0.99
    nodes = onnx.load(tmp_path / "q.onnx").graph.node
    quantized = [n.input[0] for n in nodes if n.op_type == "QuantizeLinear"]
    assert any(name.startswith("/fnac/objectness/trunk/layer4/") for name in quantized)
