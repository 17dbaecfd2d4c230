"""POST /localize on a model with object-guided localization (OGL): boxes and images from the fused map,
`ogl=false` for the audio-visual map alone, `sounding` from the audio-visual score either way."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from fnac import postprocess
from tests.service.conftest import (
    TOY_TAU,
    build_toy_model,
    encode_audio,
    encode_image,
    serve_app,
    tone,
    toy_heatmap,
    toy_objectness,
)

pytestmark = pytest.mark.anyio

WHITE = (8, 40, 40, 72)  # x0, y0, x1, y1 in a 112 x 112 frame: bright, so the toy's audio-visual map is hot
RED = (72, 40, 104, 72)  # red: an "object" for the toy's objectness, dim for its audio-visual map
ALPHA = 0.4


def two_squares() -> np.ndarray:
    frame = np.zeros((112, 112, 3), np.uint8)
    frame[WHITE[1] : WHITE[3], WHITE[0] : WHITE[2]] = 255
    frame[RED[1] : RED[3], RED[0] : RED[2]] = (255, 0, 0)
    return frame


def covers(box: dict, ref: tuple[int, int, int, int]) -> bool:
    """The box's centre lies in `ref`."""
    cx, cy = (box["x0"] + box["x1"]) / 2, (box["y0"] + box["y1"]) / 2
    return ref[0] <= cx < ref[2] and ref[1] <= cy < ref[3]


@pytest.fixture(scope="module")
def ogl_model(tmp_path_factory):
    return build_toy_model(tmp_path_factory.mktemp("ogl") / "toy-ogl.onnx", ogl_alpha=ALPHA)


@pytest.fixture(scope="module")
def upload():
    return {
        "image": ("frame.png", encode_image(two_squares()), "image/png"),
        "audio": ("tone.wav", encode_audio(tone(3.0, 16000), 16000), "audio/wav"),
    }


async def test_boxes_come_from_the_fused_map_and_ogl_false_gives_the_av_boxes(ogl_model, upload):
    async with serve_app(ogl_model) as live:
        fused = await live.client.post("/localize", files=upload)
        plain = await live.client.post("/localize", files=upload, params={"ogl": "false"})
        info = (await live.client.get("/v1/model")).json()
    assert fused.status_code == plain.status_code == 200, fused.text
    fused, plain = fused.json(), plain.json()
    assert info["ogl_alpha"] == ALPHA
    assert fused["served_map"] == "av_obj" and plain["served_map"] == "av"

    # The maps in the JSON are the model's: the raw heatmap and the raw objectness map.
    image = np.asarray(Image.fromarray(two_squares()).resize((28, 28), Image.Resampling.BICUBIC))
    expected_heatmap, expected_score = toy_heatmap(image, tone(3.0, 16000))
    np.testing.assert_allclose(fused["heatmap"]["values"], expected_heatmap, atol=1e-4)
    np.testing.assert_allclose(fused["objectness"]["values"], toy_objectness(image), atol=1e-5)
    assert fused["objectness"]["shape"] == [7, 7]

    # sounding is the audio-visual score's decision, whichever map the boxes come from.
    assert fused["score"] == plain["score"] == pytest.approx(expected_score, abs=1e-5)
    assert fused["sounding"] is plain["sounding"] is True

    # Audio-visual alone: the bright square only. Fused (the red square is an object, α = 0.4): the red
    # square too.
    assert len(plain["boxes"]) == 1 and covers(plain["boxes"][0], WHITE)
    assert any(covers(box, RED) for box in fused["boxes"])
    assert not any(covers(box, RED) for box in plain["boxes"])

    # Exactly the boxes of the official fusion of the two maps the response carries, at the frame's size.
    heatmap = np.array(fused["heatmap"]["values"], np.float32)
    objectness = np.array(fused["objectness"]["values"], np.float32)
    upsampled_av = postprocess.upsample(heatmap, 112, 112)
    av_up = postprocess.normalize(upsampled_av)
    obj_up = postprocess.normalize(postprocess.upsample(objectness, 112, 112))
    fused_map = ALPHA * av_up + (1 - ALPHA) * obj_up
    fused_map = (fused_map - fused_map.min()) / (fused_map.max() - fused_map.min())
    expected = postprocess.find_boxes(fused_map, upsampled_av, threshold=0.5, score_scale=TOY_TAU)
    assert [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in fused["boxes"]] == [
        (b.x0, b.y0, b.x1, b.y1) for b in expected
    ]
    for got, want in zip(fused["boxes"], expected, strict=True):
        assert got["score"] == pytest.approx(want.score, abs=1e-5)  # raw audio-visual cosines


async def test_png_overlays_follow_the_served_map(ogl_model, upload):
    async with serve_app(ogl_model) as live:
        fused = await live.client.post("/localize", files=upload, params={"format": "png", "png": "heatmap"})
        plain = await live.client.post(
            "/localize", files=upload, params={"format": "png", "png": "heatmap", "ogl": "false"}
        )
        json_png = await live.client.post("/localize", files=upload, params={"heatmap_png": "true"})
    assert fused.headers["x-fnac-map"] == "av_obj" and plain.headers["x-fnac-map"] == "av"
    fused_png = np.asarray(Image.open(io.BytesIO(fused.content)))
    plain_png = np.asarray(Image.open(io.BytesIO(plain.content)))
    # The red square is bright in the fused map and dark in the audio-visual one.
    red_centre = (56, 88)  # (row, column)
    assert fused_png[red_centre] > 200 and plain_png[red_centre] < 120
    embedded = np.asarray(Image.open(io.BytesIO(base64.b64decode(json_png.json()["heatmap"]["png"]))))
    np.testing.assert_array_equal(embedded, fused_png)


async def test_asking_for_ogl_from_a_model_without_it_is_a_422(toy_onnx_model, upload):
    async with serve_app(toy_onnx_model) as live:
        response = await live.client.post("/localize", files=upload, params={"ogl": "true"})
        default = await live.client.post("/localize", files=upload)
        info = (await live.client.get("/v1/model")).json()
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_parameter"
    assert "no object branch" in response.json()["error"]["message"]
    assert default.json()["served_map"] == "av" and default.json()["objectness"] is None
    assert info["ogl_alpha"] is None
