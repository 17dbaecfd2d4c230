import numpy as np
import pytest

from tests.service.conftest import (
    TOY_SOUNDING_THRESHOLD,
    build_toy_model,
    encode_audio,
    encode_image,
    serve_app,
    tone,
)

pytestmark = pytest.mark.anyio


async def test_model_metadata(live):
    body = (await live.client.get("/v1/model")).json()
    assert body["model"] == "toy-brightness-loudness@000000000000"
    assert (body["sample_rate"], body["clip_seconds"], body["image_size"], body["heatmap_size"]) == (
        16000,
        3.0,
        28,
        7,
    )
    assert body["sounding_threshold"] == TOY_SOUNDING_THRESHOLD
    assert body["sounding_threshold_source"] == "metadata"
    assert body["metadata"]["fnac_format_version"] == "1"
    assert body["providers"] == ["CPUExecutionProvider"]
    assert body["sounding_calibration"] is None  # the toy model does not say how its threshold was set


async def test_the_calibration_record_is_shown(tmp_path):
    import json

    import onnx

    record = {"method": "fpr", "target_fpr": 0.05, "tpr": 0.8, "fpr_by_kind": {"noise": 0.05}, "split": "val"}
    for text, shown in [(json.dumps(record), record), ("not json", None), ("[1, 2]", None)]:
        path = build_toy_model(tmp_path / "m.onnx")
        proto = onnx.load(str(path))
        onnx.helper.set_model_props(
            proto, {**{p.key: p.value for p in proto.metadata_props}, "sounding_calibration": text}
        )
        onnx.save(proto, str(path))
        # an unreadable record is ignored, not a reason to refuse the model
        async with serve_app(path) as app:
            body = (await app.client.get("/v1/model")).json()
            assert body["sounding_calibration"] == shown
            assert body["metadata"]["sounding_calibration"] == text


async def test_uncalibrated_model_uses_the_documented_fallback(tmp_path):
    from fnac.runtime import FALLBACK_SOUNDING_THRESHOLD

    model = build_toy_model(tmp_path / "uncalibrated.onnx", sounding_threshold=None)
    async with serve_app(model) as app:
        body = (await app.client.get("/v1/model")).json()
        assert body["sounding_threshold"] == FALLBACK_SOUNDING_THRESHOLD
        assert body["sounding_threshold_source"] == "fallback"
    async with serve_app(model, sounding_threshold=0.9) as app:
        body = (await app.client.get("/v1/model")).json()
        assert (body["sounding_threshold"], body["sounding_threshold_source"]) == (0.9, "settings")
        frame = encode_image(np.full((28, 28, 3), 255, np.uint8))
        for amplitude, sounding in [(0.02, False), (0.5, True)]:  # toy scores tanh(10 x rms): 0.14 and 0.998
            files = {
                "image": ("w.png", frame),
                "audio": ("t.wav", encode_audio(tone(3.0, 16000, amplitude), 16000)),
            }
            assert (await app.client.post("/localize", files=files)).json()["sounding"] is sounding
