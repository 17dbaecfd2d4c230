"""The service against a real exported FNAC network (the `tiny_onnx_model` fixture from tests/conftest.py)."""

import numpy as np
import pytest

from tests.service.conftest import frame_with_square, make_clip, serve_app, tone

pytestmark = pytest.mark.anyio


@pytest.fixture
def exported_model(tiny_onnx_model):
    return tiny_onnx_model


async def test_exported_model_serves_a_clip(exported_model):
    # An untrained network's score is anyone's guess: a threshold of -1 (the lowest cosine) makes every audible
    # window sounding, so the answer must carry boxes.
    async with serve_app(exported_model, sounding_threshold=-1.0) as live:
        meta = (await live.client.get("/v1/model")).json()
        clip = make_clip([frame_with_square(96, 64, (10, 10, 40, 40))] * 25, tone(2.5, 44100))
        response = await live.client.post("/localize", files={"video": ("clip.mp4", clip)})
        assert response.status_code == 200, response.text
        body = response.json()
        values = np.array(body["heatmap"]["values"])
        assert meta["heatmap_size"] == 2  # 64 px through a ResNet-18
        assert list(values.shape) == body["heatmap"]["shape"] == [2, 2]
        assert -1.0 - 1e-4 <= body["score"] <= 1.0 + 1e-4
        assert body["score"] == pytest.approx(values.max() * meta["tau"], abs=1e-3)
        assert body["sounding"] is True and body["boxes"]
        for box in body["boxes"]:
            assert 0 <= box["x0"] < box["x1"] <= 96 and 0 <= box["y0"] < box["y1"] <= 64
