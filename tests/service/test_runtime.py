import numpy as np
import pytest

from fnac import runtime
from fnac.runtime import ModelError, ModelMetadata, ModelRuntime
from tests.service.conftest import build_toy_model, toy_heatmap


def test_runtime_reads_metadata_and_runs_batches(toy_onnx_model):
    model = ModelRuntime(toy_onnx_model)
    meta = model.metadata
    assert (meta.sample_rate, meta.clip_seconds, meta.image_size, meta.tau) == (16000, 3.0, 28, 0.03)
    assert meta.n_samples == 48000 and meta.spectrogram["nperseg"] == 512
    assert model.providers == ["CPUExecutionProvider"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 28, 28, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal((3, 48000))).astype(np.float32)
    heatmaps, scores = model.run(images, audio)
    assert heatmaps.shape == (3, 7, 7) and scores.shape == (3,)
    for i in range(3):
        expected_heatmap, expected_score = toy_heatmap(images[i], audio[i])
        np.testing.assert_allclose(heatmaps[i], expected_heatmap, atol=1e-4)
        assert scores[i] == pytest.approx(expected_score, abs=1e-5)
    model.warm_up((1, 4))
    assert model.warmed_up


def test_missing_model_says_what_to_do(tmp_path):
    with pytest.raises(ModelError, match="FNAC_MODEL"):
        ModelRuntime(tmp_path / "absent.onnx")


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="could not load"):
        ModelRuntime(path)


def test_metadata_validation():
    good = {
        "fnac_format_version": "1",
        "sample_rate": "16000",
        "clip_seconds": "3.0",
        "image_size": "224",
        "tau": "0.03",
    }
    meta = ModelMetadata.from_props(good)
    assert meta.sounding_threshold is None and meta.n_samples == 48000
    with pytest.raises(ModelError, match="tau"):
        ModelMetadata.from_props({k: v for k, v in good.items() if k != "tau"})
    with pytest.raises(ModelError, match="fnac_format_version"):
        ModelMetadata.from_props({**good, "fnac_format_version": "7"})
    with pytest.raises(ModelError, match="malformed"):
        ModelMetadata.from_props({**good, "sample_rate": "fast"})


def test_provider_choice_without_a_gpu(monkeypatch):
    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    assert runtime.choose_providers() == ["CPUExecutionProvider"]
    assert runtime.choose_providers(["cpu"]) == ["CPUExecutionProvider"]
    with pytest.raises(ModelError, match="not available"):
        runtime.choose_providers(["NoSuchExecutionProvider"])
    # "auto", as `--providers auto` and FNAC_PROVIDERS=auto spell it, is the automatic choice
    assert (
        runtime.choose_providers(["auto"]) == runtime.choose_providers(["AUTO"]) == ["CPUExecutionProvider"]
    )


def test_provider_choice_with_a_gpu(monkeypatch):
    monkeypatch.setattr(runtime, "gpu_visible", lambda: True)
    monkeypatch.setattr(
        runtime.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert runtime.choose_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_contract_signature_is_checked(tmp_path):
    import onnx

    path = build_toy_model(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.graph.input[1].name = "waveform"  # not the contract's name
    for node in model.graph.node:
        node.input[:] = ["waveform" if name == "audio" else name for name in node.input]
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="'audio'"):
        ModelRuntime(path)


def test_ogl_model_runs_objectness_and_needs_output_and_alpha_together(tmp_path, tiny_ogl_onnx_model):
    import onnx

    ogl = ModelRuntime(tiny_ogl_onnx_model)
    assert ogl.has_objectness and ogl.metadata.ogl_alpha == 0.4
    images = np.zeros((3, 64, 64, 3), np.uint8)
    images[:, 16:40, 8:30] = 200
    heatmap, score, objectness = ogl.run_maps(images, np.zeros((3, 48000), np.float32))
    assert heatmap.shape == objectness.shape == (3, 2, 2) and score.shape == (3,)
    assert objectness.dtype == np.float32 and (objectness >= 0).all()

    model = onnx.load(str(tiny_ogl_onnx_model))
    for prop in model.metadata_props:
        if prop.key == "ogl_alpha":
            prop.value = ""  # the output without its alpha
    onnx.save(model, str(tmp_path / "no-alpha.onnx"))
    with pytest.raises(ModelError, match="go together"):
        ModelRuntime(tmp_path / "no-alpha.onnx")
    for prop in model.metadata_props:
        if prop.key == "ogl_alpha":
            prop.value = "1.5"
    onnx.save(model, str(tmp_path / "bad-alpha.onnx"))
    with pytest.raises(ModelError, match="between 0 and 1"):
        ModelRuntime(tmp_path / "bad-alpha.onnx")

    plain = ModelRuntime(build_toy_model(tmp_path / "toy.onnx"))
    assert not plain.has_objectness
    toy_images, toy_audio = np.zeros((2, 28, 28, 3), np.uint8), np.zeros((2, 48000), np.float32)
    assert plain.run_maps(toy_images, toy_audio)[2] is None
