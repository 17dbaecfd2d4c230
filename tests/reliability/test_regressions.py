"""Bugs the reliability suite found, pinned at the function level (fnac/media.py, fnac/pipeline.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks import malformed
from fnac import media, windows
from fnac.pipeline import InputSpec, decode_image_audio

SPEC = InputSpec(
    image_size=32, sample_rate=16000, clip_seconds=3.0, max_seconds=60.0, max_pixels=10**6, max_windows=16
)


@pytest.mark.parametrize("stride", [1e-9, 1e-300, 5e-324])
def test_a_tiny_stride_is_refused_before_any_window_is_built(stride):
    # It used to build the list of (up to 10^300) window times first: a decode worker stuck until its timeout,
    # its memory growing by ~1 GB/s; 5e-324 overflowed math.floor instead.
    assert windows.sweep_count(10.0, clip_seconds=3.0, stride=stride) > 10**8
    started = time.perf_counter()
    with pytest.raises(media.MediaTooLarge) as raised:
        media.decode_clip_sweep(
            malformed.encode_clip(4.0), stride=stride, clip_seconds=1.0, sample_rate=16000, max_windows=16
        )
    assert raised.value.code == "too_many_windows"
    with pytest.raises(media.MediaTooLarge):
        decode_image_audio(
            malformed.encode_image(),
            malformed.tone_wav(6.0),
            SPEC,
            stride=stride,
            image_name="f.png",
            audio_name="a.wav",
        )
    assert time.perf_counter() - started < 5


def test_sweep_times_unchanged_for_ordinary_strides():
    assert windows.sweep_times(10.0, clip_seconds=3.0, stride=3.0) == [1.5, 4.5, 7.5]
    assert windows.sweep_count(10.0, clip_seconds=3.0, stride=3.0) == 3
    assert windows.sweep_times(4.0, clip_seconds=3.0, stride=5.0) == [1.5]
    assert windows.sweep_times(2.0, clip_seconds=3.0, stride=1e-300) == [
        1.0
    ]  # one window whatever the stride


@pytest.mark.parametrize(
    ("rate", "code"),
    [
        (0, "unreadable_media"),
        (2**31 - 1, "unsupported_sample_rate"),
        (1_719_746_176, "unsupported_sample_rate"),
    ],
)
def test_absurd_sample_rates_are_quick_media_errors(rate, code):
    # 2^31-1 Hz made swresample raise ENOMEM (av.MemoryError escaped decode_audio); 1.7 GHz took ~10 s of CPU in
    # swresample (a cheap way to tie up decode workers) and then gave 0 samples.
    started = time.perf_counter()
    with pytest.raises(media.MediaError) as raised:
        media.decode_audio(malformed.wav_bytes(np.zeros(3000), rate), sample_rate=16000)
    assert raised.value.code == code and time.perf_counter() - started < 1


def test_resampling_errors_and_empty_results_are_media_errors(monkeypatch):
    import av

    def failing(*args):
        raise av.error.MemoryError(12, "Cannot allocate memory")

    wav = malformed.wav_bytes(np.zeros(3000), 16000)
    monkeypatch.setattr(media, "resample", failing)
    with pytest.raises(media.MediaError, match="could not be resampled"):
        media.decode_audio(wav, sample_rate=16000)
    monkeypatch.setattr(media, "resample", lambda *args: np.zeros(0, np.float32))
    with pytest.raises(media.MediaError, match="contains no samples"):
        media.decode_audio(wav, sample_rate=16000)


def test_real_high_rates_still_decode():
    wave = media.decode_audio(malformed.wav_bytes(np.zeros(76800), 768_000), sample_rate=16000)
    assert wave.size == 1600


def test_a_video_stream_without_frames_is_a_media_error():
    # The seek to the window raised av.PermissionError (EPERM) outside the MediaError contract.
    with pytest.raises(media.MediaError) as raised:
        media.decode_clip(malformed.clip_without_frames(), clip_seconds=1.0, sample_rate=16000)
    assert raised.value.code == "corrupt_media"


def test_a_video_codec_without_a_decoder_is_a_media_error():
    # codec_context is None for such a stream: an AttributeError used to escape.
    clip = malformed.malformed_codec(malformed.long_clip_mkv(20))
    with pytest.raises(media.MediaError) as raised:
        media.decode_clip(clip, clip_seconds=1.0, sample_rate=16000)
    assert raised.value.code == "unsupported_codec"
