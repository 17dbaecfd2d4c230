"""The pipeline's stages on their own: decoding inputs given as files or arrays, batches, post-processing."""

from __future__ import annotations

import numpy as np
import pytest

from fnac import media, pipeline, postprocess
from fnac.pipeline import InputSpec, PostOptions
from fnac.runtime import ModelRuntime
from tests.service.conftest import (
    TOY_CLIP_SECONDS,
    TOY_IMAGE_SIZE,
    TOY_SAMPLE_RATE,
    TOY_SOUNDING_THRESHOLD,
    TOY_TAU,
    build_toy_model,
    encode_audio,
    encode_image,
    frame_with_square,
    make_clip,
    tone,
    toy_heatmap,
)

SPEC = InputSpec(TOY_IMAGE_SIZE, TOY_SAMPLE_RATE, TOY_CLIP_SECONDS, max_windows=8)
POST = PostOptions(tau=TOY_TAU, sounding_threshold=TOY_SOUNDING_THRESHOLD)
SQUARE = (100, 20, 140, 60)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    return ModelRuntime(build_toy_model(tmp_path_factory.mktemp("model") / "toy.onnx"))


def test_import_fnac_pulls_in_neither_torch_nor_the_web_stack():
    import subprocess
    import sys

    code = (
        "import sys, fnac, fnac.pipeline;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'fastapi', 'starlette', 'service'});"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_arrays_and_files_give_the_same_inputs():
    frame = frame_with_square(160, 120, SQUARE)
    wave = tone(4.0, 22050)
    from_files = pipeline.decode_image_audio(
        encode_image(frame), encode_audio(wave, 22050), SPEC, stride=0.5, keep_frames=True
    )
    from_arrays = pipeline.decode_image_audio(frame, (wave, 22050), SPEC, stride=0.5, keep_frames=True)
    assert from_files.times == from_arrays.times == [1.5, 2.0, 2.5]
    assert from_arrays.frame_size == (120, 160) and from_arrays.duration == pytest.approx(4.0)
    assert np.array_equal(from_files.images[0], from_arrays.images[0])
    assert np.array_equal(from_files.frames[0], frame)
    # The WAV quantises to 16 bits; otherwise the same resampler and window rule.
    assert np.allclose(from_files.audio[1], from_arrays.audio[1], atol=1e-4)
    stereo = pipeline.decode_image_audio(frame, (np.stack([wave, wave], axis=1), 22050), SPEC)
    planar = pipeline.decode_image_audio(frame, (np.stack([wave, wave]), 22050), SPEC)
    assert np.array_equal(planar.audio[0], stereo.audio[0])
    assert np.allclose(stereo.audio[0], pipeline.decode_image_audio(frame, (wave, 22050), SPEC).audio[0])


@pytest.mark.parametrize(
    ("image", "audio", "code"),
    [
        (np.zeros((10, 10), np.uint8), (np.zeros(100, np.float32), 16000), "invalid_image"),
        (np.zeros((10, 10, 3), np.float32), (np.zeros(100, np.float32), 16000), "invalid_image"),
        (np.zeros((10, 10, 3), np.uint8), (np.zeros(0, np.float32), 16000), "empty_audio"),
        (np.zeros((10, 10, 3), np.uint8), (np.zeros(100, np.float32), 0), "unsupported_sample_rate"),
    ],
)
def test_bad_arrays_are_one_clear_error(image, audio, code):
    with pytest.raises(media.MediaError) as raised:
        pipeline.decode_image_audio(image, audio, SPEC)
    assert raised.value.code == code


def test_a_sweep_over_the_limit_is_refused_before_windows_are_built():
    with pytest.raises(media.MediaTooLarge) as raised:
        pipeline.decode_image_audio(
            np.zeros((8, 8, 3), np.uint8), (np.zeros(16000 * 60), 16000), SPEC, stride=1
        )
    assert raised.value.code == "too_many_windows"


def test_video_stages_end_to_end_match_the_numpy_reference(runtime):
    clip = make_clip([frame_with_square(160, 120, SQUARE)] * 40, tone(4.0, 16000), rate=16000)
    decoded = pipeline.decode_video(clip, SPEC, stride=0.5)
    heatmaps, scores, objectness = pipeline.run_model(runtime, decoded.images, decoded.audio, batch_size=2)
    assert heatmaps.shape == (3, 7, 7) and scores.shape == (3,) and objectness is None
    for k in range(3):
        expected, score = toy_heatmap(decoded.images[k], decoded.audio[k])
        assert np.allclose(heatmaps[k], expected, atol=1e-4) and scores[k] == pytest.approx(score, abs=1e-5)
    result = pipeline.localize_decoded(decoded, heatmaps, scores, POST, stride=0.5)
    assert (result.width, result.height, result.stride) == (160, 120, 0.5)
    assert [w.time for w in result.windows] == [1.5, 2.0, 2.5]
    window = result.windows[0]
    assert window.sounding and window.boxes
    located = postprocess.localize(heatmaps[0], (120, 160), tau=TOY_TAU)
    assert window.boxes == located.boxes


def test_boxes_follow_the_sounding_decision():
    heatmap = np.zeros((7, 7), np.float32)
    heatmap[2, 5] = 10.0
    audio = tone(3.0, 16000)
    quiet = PostOptions(tau=TOY_TAU, sounding_threshold=0.9)
    not_sounding = pipeline.localize_window(heatmap, 0.3, audio, (120, 160), quiet)
    assert not not_sounding.sounding and not_sounding.boxes == []
    always = pipeline.localize_window(
        heatmap, 0.3, audio, (120, 160), PostOptions(TOY_TAU, 0.9, boxes="always")
    )
    assert not always.sounding and len(always.boxes) == 1
    silent = pipeline.localize_window(heatmap, 0.95, np.zeros(100, np.float32), (120, 160), quiet)
    assert (
        not silent.sounding and silent.audio_level_dbfs == postprocess.LEVEL_FLOOR_DBFS and silent.boxes == []
    )
    assert pipeline.localize_window(heatmap, 0.95, audio, (120, 160), quiet).boxes
    with pytest.raises(ValueError, match="boxes"):
        PostOptions(TOY_TAU, 0.5, boxes="never")
