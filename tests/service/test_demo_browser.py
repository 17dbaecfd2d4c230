"""The demo page at `/` driven end to end in headless Chromium against a real uvicorn on loopback.

Needs Debian's `chromium` (installed by `make test` through scripts/system_deps.sh) and the `playwright` Python
package; Playwright's own browser download is not used.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import encode_audio, encode_image, frame_with_square, make_clip, tone
from training.live_server import live_server

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# The flags from docs/ENVIRONMENT.md; Playwright adds --headless and a fresh --user-data-dir per launch.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FRAME_WIDTH, FRAME_HEIGHT = 320, 240
VIEWPORT = {"width": 1000, "height": 1000}


@pytest.fixture(scope="module")
def server(tiny_onnx_model, tmp_path_factory):
    """`fnac serve` on the tiny exported FNAC model, in its own process on a free loopback port."""
    log_path = tmp_path_factory.mktemp("demo") / "server.log"
    # The random tiny model never reaches its threshold of 0.5, and a window that is not sounding has no
    # boxes; with the threshold at -1 every window with sound is sounding, so the page has boxes to draw.
    env = {"FNAC_DECODE_WORKERS": "1", "FNAC_SOUNDING_THRESHOLD": "-1"}
    with live_server(tiny_onnx_model, log_path, env, ready_timeout=60) as running:
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
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{server}/")
    yield page
    context.close()


def _frame() -> np.ndarray:
    # Grey, not black, so the blended colormap shows clearly; a white square for some structure.
    return frame_with_square(FRAME_WIDTH, FRAME_HEIGHT, (200, 40, 280, 120), base=96)


def _submit_and_wait(page) -> None:
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])")
    page.wait_for_function(
        "() => { const img = document.getElementById('overlay'); return img.complete && img.naturalWidth > 0; }"
    )


def _shown_result(page) -> dict:
    rows = page.locator("#boxes tbody tr")
    return {
        "score": page.inner_text("#score"),
        "sounding": page.inner_text("#sounding"),
        "level": page.inner_text("#level"),
        "model": page.inner_text("#model"),
        "boxes": [rows.nth(i).locator("td").all_inner_texts() for i in range(rows.count())],
        "natural_size": page.evaluate(
            "() => [document.getElementById('overlay').naturalWidth, document.getElementById('overlay').naturalHeight]"
        ),
    }


def _expected_result(body: dict) -> dict:
    """What the page should show for an API response, formatted as the page formats it."""
    return {
        "score": f"{body['score']:.3f}",
        "sounding": "sounding" if body["sounding"] else "not sounding",
        "level": f"{body['audio_level_dbfs']:.1f}",
        "model": body["model"],
        "boxes": [
            [str(b["x0"]), str(b["y0"]), str(b["x1"]), str(b["y1"]), f"{b['score']:.3f}"]
            for b in body["boxes"]
        ],
        "natural_size": [FRAME_WIDTH, FRAME_HEIGHT],
    }


def _is_jet_blue(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 2].astype(int) - rgb[..., 0] > 40) & (rgb[..., 2].astype(int) - rgb[..., 1] > 40)


def _is_jet_red(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0].astype(int) - rgb[..., 1] > 40) & (rgb[..., 0].astype(int) - rgb[..., 2] > 40)


def _distance_to_jet_blend(shown: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Per pixel, the distance from the nearest colour 0.5 x frame + 0.5 x jet(v) (any v), or white."""
    v = np.linspace(0.0, 1.0, 256)[:, None]
    jet = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0])), 0.0, 1.0) * 255.0  # [256, 3]
    blends = 0.5 * frame.astype(np.float32)[:, :, None, :] + 0.5 * jet  # [H, W, 256, 3]
    distance = np.abs(blends - shown[:, :, None, :]).max(axis=-1).min(axis=-1)
    return np.minimum(distance, np.abs(255.0 - shown).max(axis=-1))


def test_clip_upload_shows_overlay_boxes_score_and_sounding(page, server, tmp_path):
    clip_path = tmp_path / "clip.mp4"
    clip_path.write_bytes(make_clip([_frame()] * 30, tone(3.0, 44100)))  # H.264 + AAC, 3 s at 10 fps

    page.set_input_files("#video", str(clip_path))
    _submit_and_wait(page)
    assert page.inner_text("#error") == ""

    # The same upload straight to the API: the page must show exactly what the service answers.
    api = httpx.post(f"{server}/localize", files={"video": ("clip.mp4", clip_path.read_bytes())}, timeout=60)
    overlay_api = httpx.post(
        f"{server}/localize?format=png", files={"video": ("clip.mp4", clip_path.read_bytes())}, timeout=60
    )
    assert api.status_code == 200 and overlay_api.status_code == 200
    expected = _expected_result(api.json())
    assert expected["boxes"], "a non-constant heatmap always has at least one box"
    assert _shown_result(page) == expected

    screenshot_path = tmp_path / "demo.png"
    page.screenshot(path=str(screenshot_path))
    screenshot = np.asarray(Image.open(screenshot_path).convert("RGB"))
    assert screenshot.shape == (VIEWPORT["height"], VIEWPORT["width"], 3)
    assert screenshot.std() > 20, "the screenshot is (nearly) blank"

    # The overlay as rendered in the page: inside the <img>'s 1 px border, displayed at its natural size.
    box = page.locator("#overlay").bounding_box()
    assert (round(box["width"]), round(box["height"])) == (FRAME_WIDTH + 2, FRAME_HEIGHT + 2)
    left, top = round(box["x"]) + 1, round(box["y"]) + 1
    shown = screenshot[top : top + FRAME_HEIGHT, left : left + FRAME_WIDTH]
    # Both ends of the jet colormap are there (min-max normalisation spans [0, 1]) ...
    assert _is_jet_blue(shown).mean() > 0.01 and _is_jet_red(shown).mean() > 0.01
    # ... and every pixel is the frame blended half and half with some jet colour, or a white box line.
    assert _distance_to_jet_blend(shown, _frame()).mean() < 3
    assert (_distance_to_jet_blend(shown, _frame()) < 8).mean() > 0.97
    # Pixel for pixel what the API renders, up to colour handling in the browser.
    reference = np.asarray(Image.open(io.BytesIO(overlay_api.content)).convert("RGB"))
    assert reference.shape == shown.shape
    assert np.abs(shown.astype(int) - reference).mean() < 3


def test_image_and_audio_upload_then_a_bad_upload_shows_an_error(page, server, tmp_path):
    image_path, audio_path = tmp_path / "frame.png", tmp_path / "sound.wav"
    image_path.write_bytes(encode_image(_frame()))
    audio_path.write_bytes(encode_audio(tone(3.0, 22050), 22050))

    page.set_input_files("#image", str(image_path))
    page.set_input_files("#audio", str(audio_path))
    _submit_and_wait(page)
    api = httpx.post(
        f"{server}/localize",
        files={
            "image": ("frame.png", image_path.read_bytes()),
            "audio": ("sound.wav", audio_path.read_bytes()),
        },
        timeout=60,
    )
    assert api.status_code == 200
    assert _shown_result(page) == _expected_result(api.json())
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
