import asyncio
import io
import os
import signal
import threading

import numpy as np
import pytest
from PIL import Image

from fnac import images, media
from tests.service.conftest import (
    TOY_SOUNDING_THRESHOLD,
    TOY_TAU,
    encode_audio,
    encode_image,
    frame_with_square,
    make_clip,
    rotated_copy,
    serve_app,
    tone,
    upright_copy,
)

pytestmark = pytest.mark.anyio

SQUARE = (100, 20, 140, 60)  # x0, y0, x1, y1 in a 160 x 120 frame
LOUDNESS = float(np.tanh(10 * 0.5 / np.sqrt(2)))  # the toy model's audio factor for a 0.5-amplitude tone


def iou(box: dict, ref: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = (
        max(box["x0"], ref[0]),
        max(box["y0"], ref[1]),
        min(box["x1"], ref[2]),
        min(box["y1"], ref[3]),
    )
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    area = (box["x1"] - box["x0"]) * (box["y1"] - box["y0"]) + (ref[2] - ref[0]) * (ref[3] - ref[1])
    return inter / (area - inter)


@pytest.fixture(scope="module")
def square_clip() -> bytes:
    """4 s, 160 x 120, a white square on black, a loud tone: the toy model's clear sound source."""
    return make_clip([frame_with_square(160, 120, SQUARE)] * 40, tone(4.0, 44100))


@pytest.fixture(scope="module")
def silent_clip() -> bytes:
    return make_clip([frame_with_square(160, 120, SQUARE)] * 40, np.zeros(4 * 44100, np.float32))


def assert_error(response, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    for word in words:
        assert word in body["error"]["message"]
    assert "Traceback" not in response.text


async def test_clip_gives_box_around_the_source_in_frame_pixels(live, square_clip):
    response = await live.client.post("/localize", files={"video": ("clip.mp4", square_clip, "video/mp4")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (160, 120)
    assert body["model"] == "toy-brightness-loudness@000000000000"
    assert body["time"] == pytest.approx(2.0, abs=0.05)
    assert body["score"] == pytest.approx(LOUDNESS, abs=0.01)
    assert body["sounding"] is True
    values = np.array(body["heatmap"]["values"])
    assert body["heatmap"]["shape"] == [7, 7] and values.shape == (7, 7)
    assert values.max() * TOY_TAU == pytest.approx(body["score"], abs=1e-4)
    assert np.unravel_index(values.argmax(), values.shape) in {(2, 5), (1, 5), (2, 6)}
    [box] = body["boxes"]
    assert iou(box, SQUARE) > 0.8
    assert box["score"] == pytest.approx(body["score"], abs=0.05)
    assert set(body["timings"]) == {"decode_ms", "queue_ms", "inference_ms", "postprocess_ms", "total_ms"}
    assert response.headers["x-request-id"]


async def test_silence_is_not_sounding(live, silent_clip):
    body = (await live.client.post("/localize", files={"video": ("quiet.mp4", silent_clip)})).json()
    assert body["score"] == pytest.approx(0.0, abs=1e-3)
    assert body["score"] < TOY_SOUNDING_THRESHOLD and body["sounding"] is False
    assert body["boxes"] == []


@pytest.mark.parametrize("size", [(640, 360), (90, 200)])
async def test_image_and_audio_boxes_scale_to_the_uploaded_image(live, size):
    width, height = size
    square = (width // 8, height // 2, width // 8 + width // 4, height // 2 + height // 4)
    image = encode_image(frame_with_square(width, height, square), "PNG")
    audio = encode_audio(tone(2.0, 22050), 22050)  # shorter than the 3 s window: tiled
    response = await live.client.post(
        "/localize", files={"image": ("frame.png", image), "audio": ("sound.wav", audio)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == size
    assert body["time"] is None
    assert body["sounding"] is True
    assert iou(body["boxes"][0], square) > 0.6


async def test_exif_rotated_jpeg_is_localized_upright(live):
    stored = frame_with_square(160, 120, SQUARE)  # square top-right in the stored pixels
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: 120 wide, 160 tall, square bottom-right
    image = encode_image(img, "JPEG", quality=95, exif=exif.tobytes())
    audio = encode_audio(tone(3.0, 16000), 16000)
    body = (
        await live.client.post("/localize", files={"image": ("photo.jpg", image), "audio": ("a.wav", audio)})
    ).json()
    assert (body["width"], body["height"]) == (120, 160)
    upright = (120 - SQUARE[3], SQUARE[0], 120 - SQUARE[1], SQUARE[2])  # the square after the rotation
    assert iou(body["boxes"][0], upright) > 0.7


@pytest.mark.parametrize("degrees", [90, 180, 270])
async def test_clip_with_a_rotate_tag_is_localized_as_displayed(live, square_clip, degrees, tmp_path):
    tagged = rotated_copy(square_clip, degrees, tmp_path)
    response = await live.client.post("/localize", files={"video": ("phone.mp4", tagged)})
    assert response.status_code == 200, response.text
    body = response.json()
    turned = np.rot90(frame_with_square(160, 120, SQUARE), k=degrees // 90)  # the tag is counter-clockwise
    assert (body["width"], body["height"]) == (turned.shape[1], turned.shape[0])
    ys, xs = np.nonzero(turned[..., 0])
    assert iou(body["boxes"][0], (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)) > 0.8
    # The same answer as for the clip re-encoded upright by the ffmpeg CLI (within the encoder's error).
    reference = (
        await live.client.post("/localize", files={"video": ("upright.mp4", upright_copy(tagged, tmp_path))})
    ).json()
    assert (reference["width"], reference["height"]) == (body["width"], body["height"])
    assert np.allclose(body["heatmap"]["values"], reference["heatmap"]["values"], atol=0.2)  # raw = cos/tau
    assert body["score"] == pytest.approx(reference["score"], abs=0.01)
    assert iou(body["boxes"][0], tuple(reference["boxes"][0][k] for k in ("x0", "y0", "x1", "y1"))) > 0.9
    png = await live.client.post("/localize", params={"format": "png"}, files={"video": ("p.mp4", tagged)})
    overlay = np.asarray(Image.open(io.BytesIO(png.content)))
    assert overlay.shape == turned.shape
    hot = turned[..., 0] > 0
    assert overlay[hot, 0].mean() > 200 and overlay[~hot, 2].mean() > overlay[~hot, 0].mean()


async def test_a_window_that_is_not_sounding_has_no_boxes_unless_asked(live):
    # A quiet tone (-37 dBFS): above the silence level, but the toy model's score stays under its threshold,
    # while the map still shows the square.
    clip = make_clip([frame_with_square(160, 120, SQUARE)] * 40, tone(4.0, 16000, amplitude=0.02), rate=16000)
    body = (await live.client.post("/localize", files={"video": ("quiet.mp4", clip)})).json()
    assert body["sounding"] is False and -60 < body["audio_level_dbfs"] < -30
    assert body["boxes"] == []
    assert np.unravel_index(np.argmax(body["heatmap"]["values"]), (7, 7)) in {(2, 5), (1, 5), (2, 6)}
    always = (
        await live.client.post("/localize", params={"boxes": "always"}, files={"video": ("quiet.mp4", clip)})
    ).json()
    assert always["sounding"] is False and iou(always["boxes"][0], SQUARE) > 0.8
    assert always["heatmap"] == body["heatmap"]
    sweep = (
        await live.client.post("/localize", data={"stride": "0.5"}, files={"video": ("quiet.mp4", clip)})
    ).json()
    assert all(window["boxes"] == [] for window in sweep["windows"])
    png = await live.client.post("/localize", params={"format": "png"}, files={"video": ("quiet.mp4", clip)})
    assert png.headers["x-fnac-sounding"] == "false"
    bad = await live.client.post("/localize", params={"boxes": "never"}, files={"video": ("quiet.mp4", clip)})
    assert_error(bad, 422, "invalid_parameter", "boxes")


async def test_png_overlay_has_the_frame_size(live, square_clip):
    response = await live.client.post(
        "/localize", params={"format": "png"}, files={"video": ("c.mp4", square_clip)}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-fnac-sounding"] == "true"
    overlay = np.asarray(Image.open(io.BytesIO(response.content)))
    assert overlay.shape == (120, 160, 3)
    # The hot region is blended red over the white square, the cold background blue over black.
    assert overlay[40, 120, 0] > 200 and overlay[100, 20, 2] > overlay[100, 20, 0]


async def test_accept_header_and_bare_heatmap(live, square_clip):
    response = await live.client.post(
        "/localize",
        data={"png": "heatmap"},
        files={"video": ("c.mp4", square_clip)},
        headers={"Accept": "image/png"},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    heatmap = Image.open(io.BytesIO(response.content))
    assert heatmap.mode == "L" and heatmap.size == (160, 120)
    pixels = np.asarray(heatmap)
    assert pixels[40, 120] > 200 and pixels[100, 20] < 30


async def test_json_can_carry_the_upsampled_heatmap_png(live, square_clip):
    body = (
        await live.client.post(
            "/localize", data={"heatmap_png": "true"}, files={"video": ("c.mp4", square_clip)}
        )
    ).json()
    import base64

    png = Image.open(io.BytesIO(base64.b64decode(body["heatmap"]["png"])))
    assert png.size == (160, 120) and np.asarray(png).max() == 255


async def test_sweep_returns_one_result_per_window(live):
    # The square moves from the left half to the right half at 3 s; the sweep follows it.
    frames = [
        frame_with_square(160, 120, (10, 40, 50, 80) if i < 30 else (110, 40, 150, 80)) for i in range(60)
    ]
    clip = make_clip(frames, tone(6.0, 44100))
    response = await live.client.post(
        "/localize", data={"stride": "1.5"}, files={"video": ("moving.mp4", clip)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration"] == pytest.approx(6.0, abs=0.1) and body["stride"] == 1.5
    assert [w["time"] for w in body["windows"]] == [1.5, 3.0, 4.5]
    centres = [(w["boxes"][0]["x0"] + w["boxes"][0]["x1"]) / 2 for w in body["windows"]]
    assert centres[0] < 60 and centres[2] > 100
    assert all(w["sounding"] for w in body["windows"])


async def test_t_selects_the_frame(live):
    frames = [
        frame_with_square(160, 120, (10, 40, 50, 80) if i < 20 else (110, 40, 150, 80)) for i in range(40)
    ]
    clip = make_clip(frames, tone(4.0, 44100))
    early = (
        await live.client.post("/localize", params={"t": "0.5"}, files={"video": ("c.mp4", clip)})
    ).json()
    late = (await live.client.post("/localize", data={"t": "3.5"}, files={"video": ("c.mp4", clip)})).json()
    assert early["time"] == 0.5 and late["time"] == 3.5
    assert early["boxes"][0]["x1"] < 80 < late["boxes"][0]["x0"]


async def test_webm_vp9_opus(live):
    clip = make_clip(
        [frame_with_square(160, 120, SQUARE)] * 30,
        tone(3.0, 48000),
        container="webm",
        video_codec="libvpx-vp9",
        audio_codec="libopus",
        rate=48000,
    )
    body = (await live.client.post("/localize", files={"video": ("c.webm", clip, "video/webm")})).json()
    assert body["sounding"] is True and iou(body["boxes"][0], SQUARE) > 0.8


# ---------------------------------------------------------------------------------------------- bad input


def _png() -> bytes:
    return encode_image(frame_with_square(32, 32, (0, 0, 8, 8)), "PNG")


def _wav() -> bytes:
    return encode_audio(tone(1.0, 16000), 16000)


BAD_REQUESTS = {
    "empty video": ({"video": ("empty.mp4", b"")}, {}, 422, "empty_upload", "empty.mp4"),
    # seeded: a rare draw of os.urandom looks like an MPEG stream to FFmpeg's probe (then: no_audio_stream)
    "random bytes": (
        {"video": ("noise.mp4", np.random.default_rng(0).bytes(20000))},
        {},
        422,
        "unreadable_media",
        "noise.mp4",
    ),
    "wrong field": ({"file": ("clip.mp4", b"123")}, {}, 422, "unknown_field", "'file'"),
    "image in audio field": (
        {"image": ("a.png", _png()), "audio": ("b.png", _png())},
        {},
        422,
        "no_audio_stream",
        "b.png",
    ),
    "audio in image field": (
        {"image": ("a.wav", _wav()), "audio": ("b.wav", _wav())},
        {},
        422,
        "unreadable_image",
        "a.wav",
    ),
    "missing audio": ({"image": ("a.png", _png())}, {}, 422, "missing_field", "'audio'"),
    "video and image": (
        {"video": ("v.mp4", b"1"), "image": ("a.png", _png())},
        {},
        422,
        "conflicting_fields",
        "",
    ),
    "bad format": (
        {"image": ("a.png", _png()), "audio": ("b.wav", _wav())},
        {"format": "gif"},
        422,
        "invalid_parameter",
        "format",
    ),
    "negative t": (
        {"image": ("a.png", _png()), "audio": ("b.wav", _wav())},
        {"t": "-1"},
        422,
        "invalid_parameter",
        "t",
    ),
    "t past the end": (
        {"image": ("a.png", _png()), "audio": ("b.wav", _wav())},
        {"t": "7"},
        422,
        "time_out_of_range",
        "b.wav",
    ),
    "sweep as png": (
        {"image": ("a.png", _png()), "audio": ("b.wav", _wav())},
        {"stride": "1", "format": "png"},
        422,
        "invalid_parameter",
        "sweep",
    ),
    "image as video": ({"video": ("a.png", _png())}, {}, 422, "no_audio_stream", "a.png"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
async def test_bad_input_gets_a_named_4xx(live, case):
    files, data, status, code, word = case
    response = await live.client.post("/localize", files=files, data=data)
    assert_error(response, status, code, word)


async def test_video_without_audio_and_truncated_video(live, square_clip):
    mute = make_clip([frame_with_square(160, 120, SQUARE)] * 20, None)
    assert_error(
        await live.client.post("/localize", files={"video": ("mute.mp4", mute)}),
        422,
        "no_audio_stream",
        "mute.mp4",
    )
    response = await live.client.post(
        "/localize", files={"video": ("cut.mp4", square_clip[: len(square_clip) // 3])}
    )
    assert 400 <= response.status_code < 500 and response.json()["error"]["code"]


async def test_not_multipart_and_too_many_parts(live):
    assert_error(
        await live.client.post("/localize", json={"video": "x"}), 415, "unsupported_media_type", "multipart"
    )
    files = [("image", ("a.png", _png())), ("audio", ("b.wav", _wav()))] + [("t", (None, "1"))] * 20
    assert_error(await live.client.post("/localize", files=files), 400, "bad_request")


async def test_oversized_upload_is_refused_from_content_length(live):
    big = os.urandom(6 * 1024 * 1024)  # the live app allows 5 MB
    assert_error(
        await live.client.post("/localize", files={"video": ("big.mp4", big)}),
        413,
        "upload_too_large",
        "5 MB",
    )


async def test_oversized_upload_is_refused_while_streaming(live):
    sent = 0

    async def body():
        nonlocal sent
        yield b'--b\r\nContent-Disposition: form-data; name="video"; filename="big.mp4"\r\n\r\n'
        for _ in range(100):  # 100 x 256 kB = 25 MB if it were all read
            sent += 1
            yield b"\0" * 256 * 1024
        yield b"\r\n--b--\r\n"

    response = await live.client.post(
        "/localize", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert_error(response, 413, "upload_too_large")
    assert sent < 30  # refused after ~5 MB, not after buffering everything


async def test_clip_longer_than_the_limit(live):
    clip = make_clip([np.zeros((16, 16, 3), np.uint8)] * 35, tone(35.0, 8000), fps=1, rate=8000)
    assert_error(
        await live.client.post("/localize", files={"video": ("long.mp4", clip)}), 413, "clip_too_long", "30 s"
    )


# ---------------------------------------------------------------------------------------------- robustness


async def test_killed_decode_workers_do_not_kill_the_server(live, square_clip):
    pool = live.app.state.service.decode_pool
    for pid in pool.pids():
        os.kill(pid, signal.SIGKILL)
    responses = await asyncio.gather(
        *(live.client.post("/localize", files={"video": ("c.mp4", square_clip)}) for _ in range(3))
    )
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert (await live.client.get("/healthz")).status_code == 200


async def test_hung_decode_is_cut_off_and_the_worker_replaced(live, square_clip):
    pool = live.app.state.service.decode_pool
    before = set(pool.pids())
    pool.timeout_s = 0.001  # no real decode finishes in 1 ms: stands in for a decoder that hangs
    try:
        response = await live.client.post("/localize", files={"video": ("c.mp4", square_clip)})
    finally:
        pool.timeout_s = 30.0
    assert_error(response, 422, "decode_timeout")
    assert set(pool.pids()) != before
    assert (await live.client.post("/localize", files={"video": ("c.mp4", square_clip)})).status_code == 200


async def test_full_queue_answers_429_at_once(toy_onnx_model):
    async with serve_app(toy_onnx_model, max_batch=1, max_wait_ms=0, queue_size=1) as small:
        batcher = small.app.state.service.batcher
        entered, release = threading.Event(), threading.Event()
        real_run = batcher.run_batch

        def slow_run(images, audio):
            entered.set()
            release.wait(timeout=30)
            return real_run(images, audio)

        batcher.run_batch = slow_run
        files = {"image": ("a.png", _png()), "audio": ("b.wav", _wav())}
        first = asyncio.ensure_future(small.client.post("/localize", files=files))
        while not entered.is_set():
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(small.client.post("/localize", files=files))
        while batcher.depth < 1:
            await asyncio.sleep(0.01)
        third = await small.client.post("/localize", files=files)
        assert_error(third, 429, "overloaded")
        assert int(third.headers["retry-after"]) >= 1
        release.set()
        assert [(await first).status_code, (await second).status_code] == [200, 200]


async def test_api_keys(toy_onnx_model):
    async with serve_app(toy_onnx_model, api_keys="k-one, k-two") as keyed:
        files = {"image": ("a.png", _png()), "audio": ("b.wav", _wav())}
        assert_error(await keyed.client.post("/localize", files=files), 401, "unauthorized", "X-API-Key")
        response = await keyed.client.post("/localize", files=files, headers={"X-API-Key": "k-wrong"})
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        ok = await keyed.client.post("/localize", files=files, headers={"X-API-Key": "k-two"})
        assert ok.status_code == 200
        ok = await keyed.client.post("/localize", files=files, headers={"Authorization": "Bearer k-one"})
        assert ok.status_code == 200
        assert (await keyed.client.get("/v1/model")).status_code == 401
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await keyed.client.get(path)).status_code == 200, path


async def test_decoded_inputs_match_the_library(live):
    """The service feeds the model exactly what fnac.media produces (one preprocessing path)."""
    from tests.service.conftest import toy_heatmap

    frame = frame_with_square(200, 150, (30, 30, 90, 100))
    rng = np.random.default_rng(3)
    wave = (0.05 * rng.standard_normal(16000 * 5)).astype(np.float32)
    image, audio = encode_image(frame, "PNG"), encode_audio(wave, 16000)
    body = (
        await live.client.post("/localize", files={"image": ("f.png", image), "audio": ("a.wav", audio)})
    ).json()
    decoded = media.decode_audio(audio, sample_rate=16000)
    expected_heatmap, expected_score = toy_heatmap(
        media.resize_image(images.decode_image(image), 28), media.fit_audio_window(decoded, 48000)
    )
    np.testing.assert_allclose(np.array(body["heatmap"]["values"]), expected_heatmap, atol=1e-4)
    assert body["score"] == pytest.approx(expected_score, abs=1e-5)


async def test_sounding_follows_the_models_threshold_not_the_fallback(live):
    from fnac.runtime import FALLBACK_SOUNDING_THRESHOLD

    # A quiet tone: the toy score (its loudness factor, 0.4) lies between the model's calibrated threshold
    # (0.3) and the fallback for uncalibrated models (0.5).
    amplitude = float(np.arctanh(0.4) * np.sqrt(2) / 10)
    files = {
        "image": ("frame.png", encode_image(frame_with_square(112, 112, (0, 0, 56, 112)))),
        "audio": ("quiet.wav", encode_audio(tone(3.0, 16000, amplitude), 16000)),
    }
    body = (await live.client.post("/localize", files=files)).json()
    assert TOY_SOUNDING_THRESHOLD < body["score"] < FALLBACK_SOUNDING_THRESHOLD
    assert body["score"] == pytest.approx(0.4, abs=0.01)
    assert body["sounding"] is True and body["boxes"]
    sweep = (await live.client.post("/localize", files=files, data={"stride": "1.0"})).json()
    assert [w["sounding"] for w in sweep["windows"]] == [True]
