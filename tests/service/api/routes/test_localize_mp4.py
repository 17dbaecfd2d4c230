"""POST /localize?format=mp4: the overlay video, read back by an independent decoder (the FFmpeg CLI)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fnac import render
from tests.fnac.test_render import as_yuv420, ffmpeg_frames, moving_square_frames, probe
from tests.service.api.routes.test_localize import assert_error
from tests.service.conftest import frame_and_tone, make_clip, rotated_copy, serve_app, tone, upright_copy

pytestmark = pytest.mark.anyio

WIDTH, HEIGHT, FPS = 160, 120, 10


@pytest.fixture(scope="module")
def crossing_clip() -> bytes:
    """6 s: a bright square crossing a graded frame; a tone for 2 s, then silence (the last windows are not
    sounding)."""
    wave = np.concatenate([tone(2.0, 44100), np.zeros(4 * 44100, np.float32)])
    return make_clip(moving_square_frames(60), wave, fps=FPS)


async def _mp4(live, clip: bytes, tmp_path, name: str = "clip.mp4", **options):
    response = await live.client.post(
        "/localize", params={"format": "mp4", **options}, files={"video": (name, clip)}
    )
    assert response.status_code == 200, response.text
    path = tmp_path / "overlay.mp4"
    path.write_bytes(response.content)
    return response, path


def _streams(path) -> tuple[dict, dict]:
    streams = probe(path)["streams"]
    return (
        next(s for s in streams if s["codec_type"] == "video"),
        next(s for s in streams if s["codec_type"] == "audio"),
    )


async def test_overlay_video_matches_the_png_overlay_at_window_centres(live, crossing_clip, tmp_path):
    response, path = await _mp4(live, crossing_clip, tmp_path, name="crossing.mp4")
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-disposition"] == 'attachment; filename="crossing.overlay.mp4"'
    assert response.headers["x-fnac-windows"] == "7"  # 1.5, 2.0, ..., 4.5: the default stride is 0.5 s

    video, audio = _streams(path)
    source = tmp_path / "source.mp4"
    source.write_bytes(crossing_clip)
    source_video, _ = _streams(source)
    assert video["codec_name"] == "h264" and audio["codec_name"] == "aac"
    assert (video["width"], video["height"]) == (WIDTH, HEIGHT)
    assert int(video["nb_read_frames"]) == int(source_video["nb_read_frames"]) == 60
    assert abs(float(video["duration"]) - 6.0) <= 1 / FPS
    assert abs(float(audio["duration"]) - 6.0) <= 1 / FPS

    sweep = (
        await live.client.post("/localize", data={"stride": "0.5"}, files={"video": ("c.mp4", crossing_clip)})
    ).json()
    assert sweep["windows"][0]["sounding"] and not sweep["windows"][-1]["sounding"]
    shown = ffmpeg_frames(path, WIDTH, HEIGHT)
    x0, y0, x1, y1 = render.label_region(HEIGHT, WIDTH)
    outside_label = np.ones((HEIGHT, WIDTH), bool)
    outside_label[y0:y1, x0:x1] = False
    for window in sweep["windows"]:
        png = await live.client.post(
            "/localize",
            data={"format": "png", "t": str(window["time"])},
            files={"video": ("c.mp4", crossing_clip)},
        )
        overlay = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))
        frame = shown[round(window["time"] * FPS)].astype(int)
        # The PNG as a yuv420p video shows it (colour at half resolution), then H.264's loss at CRF 23.
        difference = np.abs(frame - as_yuv420(overlay))[outside_label]
        assert difference.mean() < 3, window["time"]
        assert np.percentile(difference, 99) < 25, window["time"]
        # Not a tolerance anything passes: the frame a second away is far off.
        other = shown[(round(window["time"] * FPS) + 10) % 60].astype(int)
        assert np.abs(other - as_yuv420(overlay))[outside_label].mean() > 2 * difference.mean()


async def test_accept_header_and_a_start_end_stretch(live, crossing_clip, tmp_path):
    response = await live.client.post(
        "/localize",
        params={"start": "1", "end": "3.5"},
        files={"video": ("c.mp4", crossing_clip)},
        headers={"Accept": "video/mp4"},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    # The windows an overlay of [1, 3.5) needs: centred in it, and the next one (3.5) to interpolate towards;
    # before 1.5 the first window holds.
    assert response.headers["x-fnac-windows"] == "5"
    path = tmp_path / "stretch.mp4"
    path.write_bytes(response.content)
    video, audio = _streams(path)
    assert int(video["nb_read_frames"]) == 25
    assert abs(float(video["duration"]) - 2.5) <= 1 / FPS
    assert abs(float(audio["duration"]) - 2.5) <= 1 / FPS


@pytest.mark.parametrize("degrees", [90, 270])
async def test_phone_clip_with_a_rotate_tag_renders_upright(live, degrees, tmp_path):
    clip = make_clip(moving_square_frames(40), tone(4.0, 44100), fps=FPS)
    tagged = rotated_copy(clip, degrees, tmp_path)
    upright = upright_copy(tagged, tmp_path)
    _, rendered = await _mp4(live, tagged, tmp_path)
    video, _ = _streams(rendered)
    assert (video["width"], video["height"]) == (HEIGHT, WIDTH)  # as displayed: portrait
    assert not any("rotation" in data for data in video.get("side_data_list", []))
    (tmp_path / "u").mkdir()
    _, reference = await _mp4(live, upright, tmp_path / "u")
    a = ffmpeg_frames(rendered, HEIGHT, WIDTH).astype(int)
    b = ffmpeg_frames(reference, HEIGHT, WIDTH).astype(int)
    assert a.shape == b.shape == (40, WIDTH, HEIGHT, 3)
    assert np.abs(a - b).mean() < 3  # the same picture, frame for frame
    assert np.abs(a - b[:, ::-1, ::-1]).mean() > 10  # ... and not its half-turn


async def test_overlay_video_errors(live, crossing_clip):
    clip = {"video": ("c.mp4", crossing_clip)}
    pair = frame_and_tone(160, 120, (10, 10, 50, 50), seconds=3.0)
    assert_error(
        await live.client.post("/localize?format=mp4", files=pair), 422, "invalid_parameter", "'video'"
    )
    assert_error(
        await live.client.post("/localize?format=mp4&t=2", files=clip), 422, "invalid_parameter", "t "
    )
    assert_error(
        await live.client.post("/localize?start=1", files=clip), 422, "invalid_parameter", "format=mp4"
    )
    assert_error(
        await live.client.post("/localize?format=mp4&start=3&end=2", files=clip),
        422,
        "invalid_range",
        "end=2",
    )
    assert_error(
        await live.client.post("/localize?format=mp4&end=9", files=clip),
        422,
        "time_out_of_range",
        "past the end",
    )


async def test_render_limits_answer_413(toy_onnx_model, crossing_clip):
    clip = {"video": ("long.mp4", crossing_clip)}
    async with serve_app(toy_onnx_model, render_max_seconds=4, render_max_frames=30) as live:
        # Known before decoding (start..end) and after it (the whole clip): the model does not run for nothing.
        assert_error(
            await live.client.post("/localize?format=mp4&start=0&end=5", files=clip),
            413,
            "render_too_long",
            "long.mp4",
            "the limit is 4 s",
        )
        assert_error(
            await live.client.post("/localize?format=mp4", files=clip), 413, "render_too_long", "6.0 s"
        )
        assert live.app.state.service.render_pool is None  # refused before any render worker started
        # 3.5 s is within the time limit, but 35 frames at 10 fps are over the frame limit.
        assert_error(
            await live.client.post("/localize?format=mp4&start=0&end=3.5", files=clip),
            413,
            "too_many_frames",
            "30",
        )
        ok = await live.client.post("/localize?format=mp4&start=1&end=3.5", files=clip)
        assert ok.status_code == 200 and ok.headers["content-type"] == "video/mp4"
