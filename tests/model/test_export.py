import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from model import export as export_mod
from model.export import ExportError, example_inputs, export_onnx, read_metadata, run_torch


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_contract_inputs_outputs_and_metadata(tiny_onnx_model, tiny_config):
    sess = session(tiny_onnx_model)
    inputs = {i.name: (i.type, i.shape) for i in sess.get_inputs()}
    assert inputs["image"][0] == "tensor(uint8)" and inputs["image"][1][1:] == [64, 64, 3]
    assert inputs["audio"][0] == "tensor(float)" and inputs["audio"][1][1:] == [48000]
    assert [o.name for o in sess.get_outputs()] == ["heatmap", "score"]
    meta = read_metadata(tiny_onnx_model)
    assert meta["sample_rate"] == "16000" and meta["clip_seconds"] == "3.0"
    assert meta["image_size"] == "64" and float(meta["tau"]) == pytest.approx(0.03)
    assert meta["sounding_threshold"] == "0.5" and meta["model_name"] == "tiny-test"
    assert json.loads(meta["spectrogram"])["noverlap"] == 274
    assert len(meta["weights_sha256"]) == 64 and meta["precision"] == "fp32"
    assert sess.get_modelmeta().custom_metadata_map["heatmap_size"] == str(tiny_config.heatmap_size)


@pytest.mark.parametrize("batch", [1, 5, 3])
def test_ort_matches_torch_on_any_batch(tiny_onnx_model, tiny_model, batch):
    images, audio = example_inputs(tiny_model.config, batch, seed=batch)
    heatmap, score = session(tiny_onnx_model).run(["heatmap", "score"], {"image": images, "audio": audio})
    ref_h, ref_s = run_torch(tiny_model, images, audio)
    assert heatmap.shape == (batch, 2, 2)
    assert np.abs(heatmap - ref_h).max() <= 1e-4 * (ref_h.max() - ref_h.min())
    np.testing.assert_allclose(score, ref_s, atol=1e-5)


def test_paper_network_exports_within_tolerance(tmp_path):
    torch.manual_seed(3)
    from model.fnac import FNAC

    model = FNAC().eval()
    parity = export_onnx(model, tmp_path / "paper.onnx")
    assert parity.batch_sizes == [1, 5] and parity.relative_diff <= 1e-4
    sess = session(tmp_path / "paper.onnx")
    assert sess.get_inputs()[0].shape[1:] == [224, 224, 3]


def test_export_refuses_a_graph_that_differs(tmp_path, tiny_model, monkeypatch):
    real = export_mod.export_fp32_proto

    def corrupted(model, meta, **kwargs):
        proto = real(model, meta, **kwargs)
        weight = next(
            t
            for t in proto.graph.initializer
            if t.name.startswith("fnac.img_proj.weight") or "img_proj" in t.name
        )
        arr = onnx.numpy_helper.to_array(weight) * 1.5
        weight.CopyFrom(onnx.numpy_helper.from_array(arr, weight.name))
        return proto

    monkeypatch.setattr(export_mod, "export_fp32_proto", corrupted)
    target = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="refusing to write"):
        export_onnx(tiny_model, target)
    assert not target.exists() and not list(tmp_path.iterdir())


def test_int8_and_fp16_exports_are_verified(tmp_path):
    from model.config import FNACConfig
    from model.fnac import FNAC

    torch.manual_seed(0)
    model = FNAC(FNACConfig(width=16, dim=64, image_size=112)).eval()
    calibration = [example_inputs(model.config, 4, seed=s) for s in range(3)]
    parity8 = export_onnx(model, tmp_path / "q.onnx", precision="int8", calibration=calibration)
    assert parity8.correlation >= 0.99
    ops = {n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "ConvInteger" not in ops
    assert read_metadata(tmp_path / "q.onnx")["precision"] == "int8"
    with pytest.raises(ExportError, match="calibration"):
        export_onnx(model, tmp_path / "q2.onnx", precision="int8")
    parity16 = export_onnx(model, tmp_path / "h.onnx", precision="fp16")
    assert parity16.correlation >= 0.99 and parity16.relative_diff < export_mod.FP16_TOLERANCE
    assert parity16.score_max_abs_diff < export_mod.FP16_SCORE_TOLERANCE
    init_types = {t.data_type for t in onnx.load(tmp_path / "h.onnx").graph.initializer}
    assert onnx.TensorProto.FLOAT16 in init_types


def test_fp16_export_is_held_to_its_tolerance(tmp_path, monkeypatch):
    from model.config import FNACConfig
    from model.fnac import FNAC

    torch.manual_seed(0)
    model = FNAC(FNACConfig(width=8, dim=32, image_size=64)).eval()
    monkeypatch.setattr(export_mod, "FP16_TOLERANCE", 1e-9)  # no fp16 graph is that exact
    target = tmp_path / "h.onnx"
    with pytest.raises(ExportError, match="fp16 output differs from torch fp32"):
        export_onnx(model, target, precision="fp16")
    assert not target.exists()
