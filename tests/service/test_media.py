import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from fnac import images, media, windows
from tests.service.conftest import encode_audio, encode_image, make_clip, tone

# ---------------------------------------------------------------------------------------------- images


def test_decode_image_applies_exif_orientation():
    stored = np.zeros((20, 40, 3), np.uint8)  # wide; left half red
    stored[:, :20, 0] = 255
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    data = encode_image(img, "JPEG", quality=95, exif=exif.tobytes())

    decoded = images.decode_image(data)

    assert decoded.shape == (40, 20, 3)  # tall after rotation
    # Clockwise rotation puts the stored left half on top.
    assert decoded[:18, :, 0].mean() > 200
    assert decoded[22:, :, 0].mean() < 50


@pytest.mark.parametrize(
    ("image", "expected_value"),
    [
        (Image.new("L", (8, 6), 77), 77),
        (Image.new("LA", (8, 6), (77, 0)), 77),
        (Image.new("RGBA", (8, 6), (77, 77, 77, 10)), 77),  # alpha dropped, colour kept
        (Image.new("P", (8, 6), 0).convert("P"), 0),
        (Image.fromarray(np.full((6, 8), 65535, np.uint16)), 255),  # 16-bit grey scaled, not clipped
        (Image.fromarray(np.full((6, 8), 32896, np.uint16)), 128),
    ],
    ids=["L", "LA", "RGBA", "P", "I16-max", "I16-mid"],
)
def test_decode_image_converts_modes_to_rgb(image, expected_value):
    decoded = images.decode_image(encode_image(image, "PNG"))
    assert decoded.dtype == np.uint8
    assert decoded.shape == (6, 8, 3)
    assert np.all(decoded == expected_value)


def test_decode_image_cmyk_jpeg():
    data = encode_image(Image.new("CMYK", (10, 7), (0, 255, 255, 0)), "JPEG", quality=95)  # red in CMYK
    decoded = images.decode_image(data)
    assert decoded.shape == (7, 10, 3)
    assert decoded[..., 0].mean() > 200 and decoded[..., 1].mean() < 60


def _png_claiming_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims width x height (a decompression bomb's calling card)."""
    data = bytearray(encode_image(Image.new("L", (1, 1)), "PNG"))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def test_decode_image_rejects_bombs_before_decoding():
    started = time.perf_counter()
    with pytest.raises(media.MediaTooLarge) as info:
        images.decode_image(_png_claiming_size(4000, 3000), max_pixels=10_000_000, name="bomb.png")
    assert info.value.code == "image_too_large"
    assert "bomb.png" in info.value.message and "4000x3000" in info.value.message
    # Far beyond Pillow's own limit: Pillow refuses at open, still the same typed error.
    with pytest.raises(media.MediaTooLarge) as info:
        images.decode_image(_png_claiming_size(50_000, 50_000), name="bomb.png")
    assert info.value.code == "image_too_large" and "bomb.png" in info.value.message
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x00\x01garbage" * 50, "unreadable_image"),
        (
            encode_image(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8), "JPEG")[
                :600
            ],
            "corrupt_image",
        ),
        (b"", "unreadable_image"),
    ],
    ids=["random", "truncated", "empty"],
)
def test_decode_image_errors_are_typed(data, code):
    with pytest.raises(media.MediaError) as info:
        images.decode_image(data, name="x.jpg")
    assert info.value.code == code
    assert "x.jpg" in info.value.message


def test_resize_image_matches_pil_bicubic():
    image = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    resized = media.resize_image(image, 28)
    expected = np.asarray(Image.fromarray(image).resize((28, 28), Image.BICUBIC))
    assert resized.shape == (28, 28, 3) and resized.dtype == np.uint8
    np.testing.assert_array_equal(resized, expected)


# ---------------------------------------------------------------------------------------------- audio


def test_fit_audio_window_takes_the_centre():
    wave = np.linspace(-0.5, 0.5, 1000, dtype=np.float32)
    window = media.fit_audio_window(wave, 100)
    np.testing.assert_array_equal(window, wave[450:550])


def test_fit_audio_window_centre_sample_and_edges():
    wave = np.arange(1000, dtype=np.float32) / 1000
    np.testing.assert_array_equal(media.fit_audio_window(wave, 100, center=300), wave[250:350])
    np.testing.assert_array_equal(media.fit_audio_window(wave, 100, center=10), wave[:100])  # shifted inside
    np.testing.assert_array_equal(media.fit_audio_window(wave, 100, center=995), wave[900:])


def test_fit_audio_window_tiles_short_audio_and_clips():
    wave = np.array([0.1, -0.2, 3.0], np.float32)
    window = media.fit_audio_window(wave, 8)
    np.testing.assert_array_equal(window, np.array([0.1, -0.2, 1.0, 0.1, -0.2, 1.0, 0.1, -0.2], np.float32))
    assert window.dtype == np.float32


def test_fit_audio_window_rejects_empty():
    with pytest.raises(media.MediaError) as info:
        media.fit_audio_window(np.zeros(0, np.float32), 10)
    assert info.value.code == "empty_audio"


def test_resample_preserves_a_sine():
    wave = tone(1.0, 44100, amplitude=0.5, freq=440.0)
    out = media.resample(wave, 44100, 16000)
    assert out.shape == (16000,) and out.dtype == np.float32
    expected = tone(1.0, 16000, amplitude=0.5, freq=440.0)
    # Away from the edges (filter start-up), the resampled tone is the tone at the new rate.
    assert np.abs(out[200:-200] - expected[200:-200]).max() < 2e-3


def test_decode_audio_takes_the_mean_of_channels_and_resamples():
    left = tone(2.0, 44100, amplitude=0.6)
    right = np.zeros_like(left)
    data = encode_audio(np.stack([left, right]), 44100)  # 16-bit stereo WAV

    decoded = media.decode_audio(data, sample_rate=16000)

    assert decoded.shape == (32000,) and decoded.dtype == np.float32
    expected = tone(2.0, 16000, amplitude=0.3)  # mean of (0.6 sine, silence)
    assert np.abs(decoded[200:-200] - expected[200:-200]).max() < 3e-3


@pytest.mark.parametrize(
    ("container", "codec", "rate"),
    [
        ("flac", "flac", 44100),
        ("mp3", "libmp3lame", 44100),
        ("ogg", "libopus", 48000),
        ("ipod", "aac", 22050),
    ],
)
def test_decode_audio_reads_common_formats(container, codec, rate):
    data = encode_audio(tone(2.0, rate, amplitude=0.5), rate, container=container, codec=codec)
    decoded = media.decode_audio(data, sample_rate=16000)
    assert abs(decoded.size - 32000) < 800  # codecs add priming / padding samples
    rms = float(np.sqrt(np.mean(decoded[4000:28000] ** 2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_decode_audio_from_a_path(tmp_path):
    path = tmp_path / "tone.wav"
    path.write_bytes(encode_audio(tone(1.0, 8000), 8000))
    assert media.decode_audio(path, sample_rate=16000).shape == (16000,)


def test_decode_audio_errors():
    with pytest.raises(media.MediaError) as info:
        media.decode_audio(encode_image(np.zeros((8, 8, 3), np.uint8)), sample_rate=16000, name="photo.png")
    assert info.value.code == "no_audio_stream" and "photo.png" in info.value.message

    with pytest.raises(media.MediaTooLarge) as info:
        media.decode_audio(encode_audio(tone(3.0, 8000), 8000), sample_rate=16000, max_seconds=1.0)
    assert info.value.code == "audio_too_long"

    for data, code in [(b"", "empty_upload"), (np.random.default_rng(2).bytes(5000), "unreadable_media")]:
        with pytest.raises(media.MediaError) as info:
            media.decode_audio(data, sample_rate=16000)
        assert info.value.code == code


# ---------------------------------------------------------------------------------------------- clips


def _clock_clip(seconds: float = 4.0, fps: int = 10, **kwargs) -> bytes:
    """Frame i has brightness 5 i; the audio's amplitude grows linearly with time (0.1 + 0.2 t)."""
    frames = [np.full((48, 64, 3), 5 * i, np.uint8) for i in range(int(seconds * fps))]
    rate = kwargs.pop("rate", 44100)
    t = np.arange(round(seconds * rate)) / rate
    wave = ((0.1 + 0.2 * t) * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    return make_clip(frames, wave, fps=fps, rate=rate, **kwargs)


def _expected_rms(center: float, clip_seconds: float = 3.0) -> float:
    t = np.linspace(center - clip_seconds / 2, center + clip_seconds / 2, 10000)
    return float(np.sqrt(np.mean((0.1 + 0.2 * t) ** 2) / 2))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"container": "webm", "video_codec": "libvpx-vp9", "audio_codec": "libopus", "rate": 48000}],
    ids=["mp4-h264-aac", "webm-vp9-opus"],
)
def test_decode_clip_frame_and_audio_window_at_t(kwargs):
    clip = _clock_clip(**kwargs)
    window = media.decode_clip(clip, t=1.75, clip_seconds=3.0, sample_rate=16000)
    assert window.time == 1.75
    assert window.frame.shape == (48, 64, 3)
    assert abs(float(window.frame.mean()) - 5 * 17) < 4  # frame 17 is on screen at 1.75 s
    assert window.audio.shape == (48000,)
    rms = float(np.sqrt(np.mean(window.audio**2)))
    assert rms == pytest.approx(_expected_rms(1.75), rel=0.05)


def test_decode_clip_defaults_to_the_middle():
    window = media.decode_clip(_clock_clip(), clip_seconds=3.0, sample_rate=16000)
    assert window.time == pytest.approx(2.0, abs=0.05)
    assert abs(float(window.frame.mean()) - 5 * 20) < 4


def test_decode_clip_sweep_windows_in_time_order():
    windows, duration = media.decode_clip_sweep(
        _clock_clip(), stride=0.5, clip_seconds=3.0, sample_rate=16000
    )
    assert duration == pytest.approx(4.0, abs=0.05)
    assert [w.time for w in windows] == [1.5, 2.0, 2.5]
    brightness = [float(w.frame.mean()) for w in windows]
    assert all(abs(b - 5 * 10 * w.time) < 4 for b, w in zip(brightness, windows, strict=True))
    rms = [float(np.sqrt(np.mean(w.audio**2))) for w in windows]
    assert rms == pytest.approx([_expected_rms(w.time) for w in windows], rel=0.05)


def test_frame_threaded_sweep_decodes_the_same_windows():
    clip = _clock_clip()
    options = dict(stride=0.5, clip_seconds=3.0, sample_rate=16000)
    plain, duration = media.decode_clip_sweep(clip, **options)
    threaded, threaded_duration = media.decode_clip_sweep(clip, frame_threads=True, **options)
    assert threaded_duration == duration and len(threaded) == len(plain) == 3
    for a, b in zip(plain, threaded, strict=True):
        assert a.time == b.time and a.frame_size == b.frame_size
        assert np.array_equal(a.frame, b.frame) and np.array_equal(a.audio, b.audio)


def test_sweep_can_resize_frames_as_it_decodes():
    windows, _ = media.decode_clip_sweep(
        _clock_clip(), stride=1.0, clip_seconds=3.0, sample_rate=16000, image_size=28
    )
    assert [w.frame.shape for w in windows] == [(28, 28, 3), (28, 28, 3)]
    assert all(w.frame_size == (48, 64) for w in windows)
    assert abs(float(windows[1].frame.mean()) - 5 * 25) < 4


def test_missing_files_raise_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        images.decode_image(tmp_path / "absent.png")
    with pytest.raises(FileNotFoundError):
        media.decode_audio(tmp_path / "absent.wav", sample_rate=16000)


def test_sweep_times():
    assert windows.sweep_times(4.0, clip_seconds=3.0, stride=0.5) == [1.5, 2.0, 2.5]
    assert windows.sweep_times(10.0, clip_seconds=3.0, stride=3.0) == [1.5, 4.5, 7.5]
    assert windows.sweep_times(2.0, clip_seconds=3.0, stride=1.0) == [1.0]


def test_decode_clip_errors():
    silent_video = make_clip([np.zeros((48, 64, 3), np.uint8)] * 10, None)
    with pytest.raises(media.MediaError) as info:
        media.decode_clip(silent_video, clip_seconds=3.0, sample_rate=16000, name="mute.mp4")
    assert info.value.code == "no_audio_stream"
    assert info.value.message.startswith("audio stream missing in upload 'mute.mp4'")

    with pytest.raises(media.MediaError) as info:
        media.decode_clip(encode_audio(tone(1.0, 8000), 8000), clip_seconds=3.0, sample_rate=16000)
    assert info.value.code == "no_video_stream"

    clip = _clock_clip()
    with pytest.raises(media.MediaTooLarge) as info:
        media.decode_clip(clip, clip_seconds=3.0, sample_rate=16000, max_seconds=2.0)
    assert info.value.code == "clip_too_long"
    with pytest.raises(media.MediaTooLarge) as info:
        media.decode_clip(clip, clip_seconds=3.0, sample_rate=16000, max_pixels=1000)
    assert info.value.code == "frame_too_large"
    with pytest.raises(media.MediaError) as info:
        media.decode_clip(clip, t=9.0, clip_seconds=3.0, sample_rate=16000)
    assert info.value.code == "time_out_of_range"
    with pytest.raises(media.MediaTooLarge) as info:
        media.decode_clip_sweep(clip, stride=0.01, clip_seconds=3.0, sample_rate=16000, max_windows=10)
    assert info.value.code == "too_many_windows"


def test_media_error_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(media.MediaTooLarge("clip_too_long", "too long")))
    assert (
        type(error) is media.MediaTooLarge and error.code == "clip_too_long" and error.message == "too long"
    )


def test_decode_image_from_file_object_path(tmp_path):
    path = tmp_path / "frame.png"
    Image.fromarray(np.full((5, 9, 3), 9, np.uint8)).save(path)
    assert images.decode_image(path).shape == (5, 9, 3)
    assert images.decode_image(io.BytesIO(path.read_bytes()).getvalue()).shape == (5, 9, 3)


@pytest.mark.parametrize(("channels", "rate"), [(1, 16000), (2, 16000), (2, 44100), (1, 22050)])
def test_fast_wav_reader_is_sample_identical_to_the_ffmpeg_path(tmp_path, channels, rate):
    import wave

    from fnac.media import _decode_audio_stream, _open, read_pcm_wav

    pcm = (np.random.default_rng(0).uniform(-1, 1, (rate, channels)) * 32767).astype("<i2")
    path = tmp_path / "clip.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    fast = read_pcm_wav(path, 16000)
    with _open(path, "clip.wav") as container:  # the FFmpeg path, bypassing the fast one
        slow = _decode_audio_stream(container, container.streams.audio[0], 16000, 600.0, "clip.wav")
    assert fast.dtype == np.float32 and np.array_equal(fast, slow)
    assert np.array_equal(read_pcm_wav(path.read_bytes(), 16000), slow)  # uploads: bytes
    # Both equal the rule written out: s16 / 32768, the mean of the channels (one channel: itself), resampled.
    mono = (pcm.astype(np.float32) / np.float32(32768)).mean(axis=1, dtype=np.float32)
    assert np.array_equal(fast, media.resample(mono, rate, 16000))
    assert read_pcm_wav(tmp_path / "clip.mp4", 16000) is None  # anything but .wav goes through FFmpeg
    assert read_pcm_wav(b"RIFF\x00\x00\x00\x00WAVEjunk", 16000) is None  # damaged header: FFmpeg decides


def test_fast_wav_reader_enforces_the_duration_limit():
    import io
    import wave

    from fnac.media import MediaTooLarge, decode_audio

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(2 * 8000 * 3))  # 3 s
    with pytest.raises(MediaTooLarge) as caught:
        decode_audio(buffer.getvalue(), sample_rate=16000, max_seconds=2.0, name="long.wav")
    assert caught.value.code == "audio_too_long"
    assert decode_audio(buffer.getvalue(), sample_rate=16000, max_seconds=3.0).shape == (48000,)


def test_a_wav_header_that_breaks_the_stdlib_parser_is_a_media_error():
    # an unknown chunk claiming 4 GB: Python's wave module raises RuntimeError while skipping it
    data = b"RIFF" + struct.pack("<I", 40) + b"WAVE" + b"junk" + struct.pack("<I", 0xFFFFFFF0) + bytes(24)
    assert media.read_pcm_wav(data, 16000) is None  # the fast path steps aside
    with pytest.raises(media.MediaError):
        media.decode_audio(data, sample_rate=16000, name="broken.wav")


@pytest.mark.parametrize("kind", ["audio", "clip", "image"])
def test_decoder_errors_are_said_in_words(kind):
    """No FFmpeg error number, no '<none>' file name, no buffer repr: only what is wrong."""
    garbage = b"this is not media " * 200
    calls = {
        "audio": lambda: media.decode_audio(garbage, sample_rate=16000, name="a.wav"),
        "clip": lambda: media.decode_clip(garbage, clip_seconds=3.0, sample_rate=16000, name="c.mp4"),
        "image": lambda: images.decode_image(garbage, name="i.png"),
    }
    with pytest.raises(media.MediaError) as info:
        calls[kind]()
    message = info.value.message
    assert all(leak not in message for leak in ("[Errno", "<none>", "object at 0x", "BytesIO")), message
    assert message.startswith(f"'{kind[0]}.") or f"'{kind[0]}." in message
