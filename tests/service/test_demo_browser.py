"""The demo page at `/` driven end to end in headless Chromium against a real uvicorn on loopback.

Needs Debian's `chromium` (installed by `make test` through scripts/system_deps.sh) and the `playwright` Python
package; Playwright's own browser download is not used. The server runs the toy model of tests/service/conftest.py,
whose map lights up where the picture is bright, so a square crossing the frame drags the map along with it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from fnac import postprocess, render
from tests.service.conftest import encode_audio, encode_image, frame_with_square, make_clip, tone
from training.live_server import live_server

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Chromium as root in a container without a GPU or network: no sandbox, no GPU, no background fetches or first-run
# work. Playwright adds --headless and a fresh --user-data-dir per launch.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FRAME_WIDTH, FRAME_HEIGHT, FPS, SECONDS = 320, 240, 10, 6.0
VIEWPORT = {"width": 1000, "height": 1100}


@pytest.fixture(scope="module")
def server(toy_onnx_model, tmp_path_factory):
    """`fnac serve` on the toy model, in its own process on a free loopback port."""
    log_path = tmp_path_factory.mktemp("demo") / "server.log"
    with live_server(toy_onnx_model, log_path, {"FNAC_DECODE_WORKERS": "1"}, ready_timeout=60) as running:
        yield running.base


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the `playwright` package is missing: pip install -e '.[dev]'")
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"headless Chromium not found at {CHROMIUM}: run scripts/system_deps.sh (part of `make test`), "
            "`apt-get install chromium`, or point CHROMIUM at a Chromium binary"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{server}/")
    yield page
    context.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """6 s: a white square crossing a grey frame left to right; a tone for the first 3 s, then silence (so the
    last windows are not sounding)."""
    frames = []
    for i in range(round(SECONDS * FPS)):
        x = 10 + round(i * (FRAME_WIDTH - 90) / (SECONDS * FPS - 1))
        frames.append(frame_with_square(FRAME_WIDTH, FRAME_HEIGHT, (x, 80, x + 70, 150), base=60))
    wave = np.concatenate([tone(3.0, 44100), np.zeros(round(3.0 * 44100), np.float32)])
    path = tmp_path_factory.mktemp("demo-clip") / "crossing.mp4"
    path.write_bytes(make_clip(frames, wave, fps=FPS))
    return path


def _requests_to_localize(page) -> list:
    seen = []
    page.on("request", lambda request: seen.append(request) if "/localize" in request.url else None)
    return seen


def _submit(page) -> None:
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])")
    page.wait_for_function("() => document.getElementById('overlay').dataset.time !== undefined")


def _seek(page, t: float) -> None:
    page.evaluate("t => { const media = document.getElementById('video-player'); media.currentTime = t; }", t)
    page.wait_for_function(
        f"() => Math.abs(Number(document.getElementById('overlay').dataset.time) - {t}) < 1e-9"
    )


def _canvas(page) -> np.ndarray:
    """The overlay canvas's pixels, RGBA [H, W, 4] (un-premultiplied, as getImageData gives them)."""
    size, data = page.evaluate(
        """() => { const c = document.getElementById('overlay');
                   return [[c.height, c.width], Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]; }"""
    )
    return np.array(data, dtype=np.uint8).reshape(size[0], size[1], 4)


def _expected_map(windows: list[dict], t: float, height: int, width: int) -> tuple[np.ndarray, int]:
    """The overlay's colours and alpha at `t` by the renderer's rules (fnac/render/)."""
    timeline = render.Timeline([_Window(w) for w in windows])
    normalized = postprocess.normalize(postprocess.upsample(timeline.heatmap_at(t), height, width))
    return render.JET_LUT[postprocess.quantize(normalized)], round(255 * timeline.alpha_at(t))


class _Window:
    def __init__(self, body: dict):
        self.time, self.score, self.sounding = body["time"], body["score"], body["sounding"]
        self.heatmap = np.array(body["heatmap"]["values"])
        self.boxes = body["boxes"]


def _hot_column(canvas: np.ndarray) -> float:
    """Mean x of the map's red end (jet's top quarter) on the canvas."""
    red = (canvas[..., 0] > 200) & (canvas[..., 2] < 60) & (canvas[..., 3] < 255)
    assert red.any()
    return float(np.nonzero(red)[1].mean())


def test_clip_plays_with_the_overlay_following_the_sound(page, server, clip, tmp_path):
    requests = _requests_to_localize(page)
    page.set_input_files("#video", str(clip))
    _submit(page)
    assert page.inner_text("#error") == ""
    assert len(requests) == 1, "one click, one request"

    # The same upload straight to the API: the page must show what the service answers.
    api = httpx.post(
        f"{server}/localize",
        files={"video": (clip.name, clip.read_bytes())},
        data={"stride": "0.5"},
        timeout=60,
    )
    assert api.status_code == 200
    body = api.json()
    windows = body["windows"]
    assert [w["time"] for w in windows] == [1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    assert windows[0]["sounding"] and not windows[-1]["sounding"]  # the tone stops at 3 s
    rows = page.locator("#windows tbody tr")  # inside a closed <details>: read the text, not the rendering
    assert [rows.nth(i).locator("td").all_text_contents() for i in range(rows.count())] == [
        [
            f"{w['time']:.2f}",
            f"{w['score']:.3f}",
            "sounding" if w["sounding"] else "not sounding",
            f"{w['audio_level_dbfs']:.1f}",
        ]
        for w in windows
    ]

    # The overlay is drawn at the picture's displayed size, over the playing video.
    assert page.evaluate(
        "() => [document.getElementById('overlay').width, document.getElementById('overlay').height]"
    ) == [FRAME_WIDTH, FRAME_HEIGHT]
    assert page.evaluate(
        "() => [document.getElementById('video-player').videoWidth, document.getElementById('video-player').videoHeight]"
    ) == [FRAME_WIDTH, FRAME_HEIGHT]

    shown = {}
    for t in (1.5, 2.25, 4.0, 4.5):
        _seek(page, t)
        canvas = _canvas(page)
        colours, alpha = _expected_map(windows, t, FRAME_HEIGHT, FRAME_WIDTH)
        map_pixels = canvas[..., 3] != 255  # box outlines are opaque white
        assert map_pixels.mean() > 0.9
        assert (canvas[..., 3][map_pixels] == alpha).all(), t
        difference = np.abs(canvas[..., :3].astype(int) - colours)[map_pixels]
        assert np.percentile(difference, 99.5) <= 4, t  # the same map, up to rounding at 8-bit steps
        shown[t] = canvas
        # The numbers beside the picture are the nearest window's, and the threshold is the API's.
        window = windows[render.Timeline([_Window(w) for w in windows]).nearest(t)]
        assert page.inner_text("#window-time") == f"{window['time']:.2f}"
        assert page.inner_text("#score") == f"{window['score']:.3f}"
        assert page.inner_text("#threshold") == f"{body['sounding_threshold']:.3f}"
        assert page.inner_text("#sounding") == ("sounding" if window["sounding"] else "not sounding")
        boxes = page.locator("#boxes tbody tr")
        assert [boxes.nth(i).locator("td").all_inner_texts() for i in range(boxes.count())] == [
            [str(b["x0"]), str(b["y0"]), str(b["x1"]), str(b["y1"]), f"{b['score']:.3f}"]
            for b in window["boxes"]
        ]
        if t == 2.25:
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)

    # The map moves with the square: its hot end is further right at 4 s than at 1.5 s.
    assert _hot_column(shown[4.0]) > _hot_column(shown[1.5]) + 60
    # Where the sound has stopped: a dimmed map and no boxes.
    assert (shown[4.5][..., 3] == round(255 * 0.2)).all()
    assert (shown[1.5][..., 3] == 255).any()  # a sounding window's box
    assert windows[0]["boxes"] and not windows[-1]["boxes"]


def test_downloads_are_the_overlay_video_and_the_json(page, server, clip, tmp_path):
    requests = _requests_to_localize(page)
    page.set_input_files("#video", str(clip))
    _submit(page)
    with page.expect_download() as json_download:
        page.click("#download-json")
    downloaded = json.loads(Path(json_download.value.path()).read_text())
    assert len(requests) == 1, "the JSON comes from the page, not from a second upload"

    with page.expect_download() as mp4_download:
        page.click("#download-mp4")
    mp4_path = tmp_path / "overlay.mp4"
    mp4_download.value.save_as(mp4_path)
    assert len(requests) == 2, "one click, one request"
    assert mp4_download.value.suggested_filename == "crossing.overlay.mp4"
    probe = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(mp4_path)],
            check=True,
            capture_output=True,
        ).stdout
    )
    assert sorted(s["codec_name"] for s in probe["streams"]) == ["aac", "h264"]
    assert {(s.get("width"), s.get("height")) for s in probe["streams"] if s["codec_type"] == "video"} == {
        (FRAME_WIDTH, FRAME_HEIGHT)
    }

    api = httpx.post(
        f"{server}/localize",
        files={"video": (clip.name, clip.read_bytes())},
        data={"stride": "0.5"},
        timeout=60,
    ).json()
    for answer in (downloaded, api):
        answer.pop("timings")
    assert downloaded == api


def test_image_and_audio_upload_then_a_bad_upload_shows_an_error(page, server, tmp_path):
    image_path, audio_path = tmp_path / "frame.png", tmp_path / "sound.wav"
    image_path.write_bytes(
        encode_image(frame_with_square(FRAME_WIDTH, FRAME_HEIGHT, (200, 40, 280, 120), 96))
    )
    audio_path.write_bytes(encode_audio(tone(5.0, 22050), 22050))

    page.set_input_files("#image", str(image_path))
    page.set_input_files("#audio", str(audio_path))
    _submit(page)
    api = httpx.post(
        f"{server}/localize",
        files={
            "image": ("frame.png", image_path.read_bytes()),
            "audio": ("sound.wav", audio_path.read_bytes()),
        },
        data={"stride": "0.5"},
        timeout=60,
    )
    assert api.status_code == 200
    windows = api.json()["windows"]
    assert page.inner_text("#score") == f"{windows[0]['score']:.3f}"
    assert page.is_hidden("#download-mp4")  # the overlay video is made from a clip
    assert page.inner_text("#error") == ""

    # Random bytes as the clip: the page shows the service's error message and no stale result.
    broken_path = tmp_path / "broken.mp4"
    broken_path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    page.set_input_files("#image", [])
    page.set_input_files("#audio", [])
    page.set_input_files("#video", str(broken_path))
    page.click("#submit")
    page.wait_for_function("() => document.getElementById('error').textContent !== ''")
    problem = httpx.post(
        f"{server}/localize", files={"video": ("broken.mp4", broken_path.read_bytes())}, timeout=60
    )
    assert problem.status_code == 422
    message = problem.json()["error"]["message"]
    assert "broken.mp4" in message
    assert page.inner_text("#error") == message
    assert page.locator("#result").is_hidden()
    assert page.is_enabled("#submit")


def test_the_api_docs_render_without_internet(browser, server):
    """/docs draws the operations with nothing but the server: every other host is cut off."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(60_000)
    elsewhere: list[str] = []

    def only_the_server(route):
        if route.request.url.startswith(server):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    try:
        page.goto(f"{server}/docs")
        page.wait_for_selector(".opblock-summary-path[data-path='/localize']")
        assert (
            page.locator(".opblock-summary-path").count() >= 4
        )  # /localize, /healthz, /readyz, /v1/model ...
    finally:
        context.close()
    assert elsewhere == []


def test_a_phone_clip_with_a_rotate_tag_plays_upright_under_its_overlay(page, server, clip, tmp_path):
    from tests.service.conftest import rotated_copy

    phone = tmp_path / "phone.mp4"
    phone.write_bytes(rotated_copy(clip.read_bytes(), 90, tmp_path))
    page.set_input_files("#video", str(phone))
    _submit(page)
    body = httpx.post(
        f"{server}/localize",
        files={"video": (phone.name, phone.read_bytes())},
        data={"stride": "0.5"},
        timeout=60,
    ).json()
    assert (body["width"], body["height"]) == (FRAME_HEIGHT, FRAME_WIDTH)  # displayed: portrait
    # The browser shows the clip as the API sees it, and the overlay lies on it at that size.
    sizes = page.evaluate(
        """() => { const v = document.getElementById('video-player'), c = document.getElementById('overlay');
                   return [[v.videoWidth, v.videoHeight], [c.width, c.height]]; }"""
    )
    assert sizes == [[FRAME_HEIGHT, FRAME_WIDTH], [FRAME_HEIGHT, FRAME_WIDTH]]
    _seek(page, 1.5)
    colours, alpha = _expected_map(body["windows"], 1.5, FRAME_WIDTH, FRAME_HEIGHT)
    canvas = _canvas(page)
    map_pixels = canvas[..., 3] != 255
    assert (canvas[..., 3][map_pixels] == alpha).all()
    assert np.percentile(np.abs(canvas[..., :3].astype(int) - colours)[map_pixels], 99.5) <= 4
