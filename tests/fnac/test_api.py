"""The doors onto the pipeline agree: `fnac.Localizer`, `fnac.Client` / `fnac.AsyncClient` against a running
service, `POST /localize` and `fnac score` give the same score and boxes for the same clip."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

import fnac
from fnac.cli import main as fnac_main
from service.config import DEFAULT_MODEL
from tests.service.conftest import (
    build_toy_model,
    encode_audio,
    encode_image,
    frame_with_square,
    make_clip,
    serve_app,
    tone,
)
from training.live_server import live_server

SQUARE = (100, 20, 140, 60)


def boxes_of(result) -> list[tuple[int, int, int, int]]:
    return [(b.x0, b.y0, b.x1, b.y1) for b in result.boxes]


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    """A 3 s clip of a scene of the bundled model's synthetic benchmark, stored with a rotate tag (as a phone
    does)."""
    from fnac.images import decode_image
    from tests.service.conftest import rotated_copy
    from training.mediafiles import read_wav, write_mp4
    from training.synth import make_synth

    folder = tmp_path_factory.mktemp("clip")
    make_synth(folder / "scenes", n_classes=10, n_train=0, n_val=0, n_test=1, image_size=224,
               preset="headroom", seed=0, negatives=False)  # fmt: skip
    wave, rate = read_wav(folder / "scenes" / "audio" / "test_000000.wav")
    stored = write_mp4(
        folder / "stored.mp4", decode_image(folder / "scenes" / "frames" / "test_000000.jpg"), wave, rate
    )
    path = folder / "phone.mp4"
    path.write_bytes(rotated_copy(stored.read_bytes(), 90, folder))
    return path


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    return build_toy_model(tmp_path_factory.mktemp("model") / "toy.onnx")


def test_every_door_gives_the_same_answer_with_the_bundled_model(clip_path, tmp_path):
    local = fnac.Localizer().localize(video=clip_path)
    assert isinstance(local, fnac.LocalizeResponse)
    assert local.sounding and (local.width, local.height) == (224, 224)

    out = tmp_path / "scores.jsonl"
    args = ["score", "--model", str(DEFAULT_MODEL), str(clip_path), "-o", str(out)]
    assert fnac_main([*args, "--no-progress"]) == 0
    [line] = [json.loads(text) for text in out.read_text().splitlines()]

    with live_server(DEFAULT_MODEL, tmp_path / "server.log") as server:
        with fnac.Client(server.base) as client:
            remote = client.localize(video=clip_path)
            model = client.model()
        raw = httpx.post(
            f"{server.base}/localize",
            files={"video": ("phone.mp4", clip_path.read_bytes())},
            timeout=60,
        ).json()

    assert model["model"] == local.model == remote.model == raw["model"]
    for other in (remote.score, raw["score"], line["score"]):
        assert other == pytest.approx(local.score, abs=1e-5)
    assert remote.sounding == raw["sounding"] == line["sounding"] == local.sounding
    expected = boxes_of(local)
    assert expected
    assert boxes_of(remote) == expected
    assert [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in raw["boxes"]] == expected
    assert [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in line["boxes"]] == expected
    assert (line["width"], line["height"], raw["width"], raw["height"]) == (224, 224, 224, 224)
    assert remote.heatmap.values == local.heatmap.values


def test_localizer_takes_paths_bytes_and_arrays(toy_model, tmp_path):
    localizer = fnac.Localizer(toy_model)
    frame = frame_with_square(160, 120, SQUARE)
    wave = tone(3.0, 16000)
    image_file, audio_file = tmp_path / "frame.png", tmp_path / "sound.wav"
    image_file.write_bytes(encode_image(frame))
    audio_file.write_bytes(encode_audio(wave, 16000))
    from_paths = localizer.localize(image=image_file, audio=audio_file)
    from_bytes = localizer.localize(image=image_file.read_bytes(), audio=audio_file.read_bytes())
    from_arrays = localizer.localize(image=frame, audio=(wave, 16000))
    assert from_paths.model_dump(exclude={"timings"}) == from_bytes.model_dump(exclude={"timings"})
    assert from_arrays.score == pytest.approx(from_paths.score, abs=1e-3)  # the WAV is 16-bit
    assert boxes_of(from_arrays) == boxes_of(from_paths) and from_arrays.sounding
    sweep = localizer.localize(image=frame, audio=(np.tile(wave, 2), 16000), stride=1.0)
    assert isinstance(sweep, fnac.SweepResponse) and [w.time for w in sweep.windows] == [1.5, 2.5, 3.5, 4.5]
    result = localizer.run(image=frame, audio=(np.tile(wave, 2), 16000), stride=1.0)  # numpy heatmaps
    assert (result.width, result.height, result.duration) == (160, 120, 6.0)
    assert [w.score for w in result.windows] == [w.score for w in sweep.windows]
    assert np.allclose(result.windows[0].heatmap, sweep.windows[0].heatmap.values, atol=1e-6)


def test_localizer_errors_carry_the_api_codes(toy_model):
    localizer = fnac.Localizer(toy_model)
    with pytest.raises(fnac.LocalizeError) as raised:
        localizer.localize(video=b"not a video at all")
    assert raised.value.code == "unreadable_media" and raised.value.status is None
    with pytest.raises(fnac.LocalizeError) as raised:
        localizer.localize(image=np.zeros((8, 8, 3), np.uint8))
    assert raised.value.code == "missing_field"


@pytest.mark.anyio
async def test_async_client_matches_the_localizer_and_raises_the_api_error(toy_model):
    clip = make_clip([frame_with_square(160, 120, SQUARE)] * 40, tone(4.0, 16000, amplitude=0.02), rate=16000)
    local = fnac.Localizer(toy_model).localize(video=clip, boxes="always", stride=1.0)
    async with serve_app(toy_model) as live:
        transport = httpx.ASGITransport(app=live.app)
        async with fnac.AsyncClient("http://fnac.test", transport=transport) as client:
            remote = await client.localize(video=clip, boxes="always", stride=1.0)
            quiet = await client.localize(video=clip)
            with pytest.raises(fnac.LocalizeError) as raised:
                await client.localize(video=clip, stride=0)
            arrays = await client.localize(
                image=frame_with_square(160, 120, SQUARE), audio=(tone(3.0, 16000), 16000)
            )
    assert isinstance(remote, fnac.SweepResponse)
    assert [w.score for w in remote.windows] == pytest.approx([w.score for w in local.windows], abs=1e-5)
    assert [boxes_of(w) for w in remote.windows] == [boxes_of(w) for w in local.windows]
    assert all(w.boxes and not w.sounding for w in remote.windows)  # boxes=always on a quiet clip
    assert quiet.sounding is False and quiet.boxes == []
    assert (
        raised.value.status == 422
        and raised.value.code == "invalid_parameter"
        and "stride" in raised.value.message
    )
    assert arrays.sounding and (arrays.width, arrays.height) == (160, 120)


@pytest.mark.anyio
async def test_async_client_sends_the_api_key(toy_model):
    clip = make_clip([frame_with_square(160, 120, SQUARE)] * 40, tone(4.0, 16000), rate=16000)
    async with serve_app(toy_model, api_keys=["sesame"]) as live:
        transport = httpx.ASGITransport(app=live.app)
        async with fnac.AsyncClient("http://fnac.test", api_key="sesame", transport=transport) as client:
            assert (await client.localize(video=clip)).sounding
            assert (await client.model())["name"] == "toy-brightness-loudness"
        async with fnac.AsyncClient("http://fnac.test", api_key="wrong", transport=transport) as client:
            with pytest.raises(fnac.LocalizeError) as raised:
                await client.localize(video=clip)
    assert (raised.value.status, raised.value.code) == (401, "unauthorized")


@pytest.mark.anyio
async def test_every_door_serves_the_fused_map_of_an_ogl_model_and_the_av_map_without_it(tmp_path):
    """fnac.Localizer, POST /localize, fnac.AsyncClient and fnac score on a model with object-guided localization: the same
    fused-map boxes by default, the same audio-visual boxes with OGL turned off."""
    from tests.service.api.routes.test_localize_ogl import RED, WHITE, covers, two_squares

    model = build_toy_model(tmp_path / "toy-ogl.onnx", ogl_alpha=0.4)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(make_clip([two_squares()] * 30, tone(3.0, 16000), rate=16000))

    localizer = fnac.Localizer(model)
    local = {ogl: localizer.localize(video=clip, ogl=ogl) for ogl in (None, False)}
    async with serve_app(model) as live:
        remote = {
            ogl: (
                await live.client.post(
                    "/localize",
                    files={"video": ("clip.mp4", clip.read_bytes())},
                    params={} if ogl is None else {"ogl": "false"},
                )
            ).json()
            for ogl in (None, False)
        }
        transport = httpx.ASGITransport(app=live.app)
        async with fnac.AsyncClient("http://fnac.test", transport=transport) as client:
            via_client = {ogl: await client.localize(video=clip, ogl=ogl) for ogl in (None, False)}
    scored = {}
    for ogl, flag in ((None, []), (False, ["--no-ogl"])):
        out = tmp_path / f"scores{len(flag)}.jsonl"
        assert (
            fnac_main(["score", "--model", str(model), str(clip), "-o", str(out), "--no-progress", *flag])
            == 0
        )
        [scored[ogl]] = [json.loads(text) for text in out.read_text().splitlines()]

    for ogl, served in ((None, "av_obj"), (False, "av")):
        boxes = boxes_of(local[ogl])
        assert local[ogl].served_map == remote[ogl]["served_map"] == scored[ogl]["served_map"] == served
        assert [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in remote[ogl]["boxes"]] == boxes
        assert [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in scored[ogl]["boxes"]] == boxes
        assert boxes_of(via_client[ogl]) == boxes and via_client[ogl].served_map == served
        assert local[ogl].objectness is not None and "objectness" in scored[ogl]
        np.testing.assert_allclose(scored[ogl]["objectness"], local[ogl].objectness.values, atol=1e-4)
        assert local[ogl].sounding and local[ogl].score == pytest.approx(local[None].score)
    assert any(covers(b, RED) for b in remote[None]["boxes"])
    assert all(covers(b, WHITE) for b in remote[False]["boxes"])
    with pytest.raises(fnac.LocalizeError, match="no object branch"):
        fnac.Localizer(build_toy_model(tmp_path / "toy.onnx")).localize(video=clip, ogl=True)
