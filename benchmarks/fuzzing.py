"""Hypothesis strategies over the decode + preprocessing path: valid media files, then mutated.

The contract under test (fnac/media.py, fnac/images.py): every decoding function returns arrays of the
documented shape or raises `MediaError`; nothing else escapes and nothing hangs. Used by the fast test
(tests/reliability/test_fuzz_media.py) and, time-bounded, by `python -m benchmarks.reliability fuzz`.
"""

from __future__ import annotations

import functools

import numpy as np
from hypothesis import strategies as st

from benchmarks import malformed
from fnac import images, media
from fnac.pipeline import InputSpec, decode_image_audio, decode_video

SPEC = InputSpec(
    image_size=32, sample_rate=16000, clip_seconds=1.0, max_seconds=20.0, max_pixels=4_000_000, max_windows=16
)


@functools.cache
def seeds() -> dict[str, bytes]:
    """Small valid files of every family the service reads: the starting points for mutation."""
    import io

    from PIL import Image

    def image(fmt: str, mode: str = "RGB") -> bytes:
        buffer = io.BytesIO()
        Image.new(mode, (24, 16), 128).save(buffer, format=fmt)
        return buffer.getvalue()

    return {
        "mp4": malformed.encode_clip(1.5, size=(32, 24)),
        "webm": malformed.encode_clip(
            1.5, size=(32, 24), container="webm", codec="libvpx-vp9", audio_codec="libopus", audio_rate=48000
        ),
        "mkv": malformed.long_clip_mkv(20),
        "png": image("PNG"),
        "png16": image("PNG", "I;16"),
        "jpeg": image("JPEG"),
        "gif": image("GIF", "P"),
        "webp": image("WEBP"),
        "tiff": image("TIFF"),
        "bmp": image("BMP"),
        "wav": malformed.tone_wav(1.0),
        "flac": malformed.long_silence_flac(10),
    }


CLIPS = ("mp4", "webm", "mkv")
IMAGES = ("png", "png16", "jpeg", "gif", "webp", "tiff", "bmp")
SOUNDS = ("wav", "flac", "mp4", "webm")


@st.composite
def mutated(draw, family: tuple[str, ...] | None = None) -> bytes:
    """A seed file (of `family`, default any) with a few random byte flips, insertions, deletions, a truncation
    or a splice with another seed (a polyglot); or, one time in ten, pure noise."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=2048))
    files = seeds()
    data = bytearray(files[draw(st.sampled_from(family or sorted(files)))])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice", "header"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 256))]
        elif op == "truncate":
            del data[at:]
        elif op == "splice":
            other = files[draw(st.sampled_from(sorted(files)))]
            data[at:] = other[draw(st.integers(0, len(other) - 1)) :]
        else:  # clobber a header field: the first 64 bytes hold most of the sizes, rates and counts
            at = draw(st.integers(0, min(63, len(data) - 1)))
            data[at : at + 4] = draw(st.binary(min_size=4, max_size=4))
    return bytes(data)


def check_video(data: bytes, stride: float | None) -> bool:
    """decode_video (decode + resize): model-shaped arrays (True) or MediaError (False)."""
    try:
        decoded = decode_video(data, SPEC, stride=stride, name="fuzz.mp4")
    except media.MediaError:
        return False
    size, n = SPEC.image_size, SPEC.n_samples
    assert 1 <= len(decoded.images) == len(decoded.audio) <= SPEC.max_windows
    for image, audio in zip(decoded.images, decoded.audio, strict=True):
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        assert audio.shape == (n,) and audio.dtype == np.float32 and np.isfinite(audio).all()
    return True


def check_image_audio(image: bytes, audio: bytes) -> bool:
    """decode_image_audio (decode, resample, window, resize): model-shaped arrays (True) or MediaError
    (False)."""
    try:
        decoded = decode_image_audio(
            image, audio, SPEC, keep_frames=True, image_name="fuzz.png", audio_name="fuzz.wav"
        )
    except media.MediaError:
        return False
    assert decoded.images[0].shape == (SPEC.image_size, SPEC.image_size, 3)
    frame = decoded.frames[0]
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    assert decoded.audio[0].shape == (SPEC.n_samples,) and np.isfinite(decoded.audio[0]).all()
    return True


def check_image(data: bytes) -> bool:
    """decode_image: an RGB frame within the pixel limit (True) or MediaError (False)."""
    try:
        frame = images.decode_image(data, max_pixels=SPEC.max_pixels, name="fuzz")
    except media.MediaError:
        return False
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    assert frame.shape[0] * frame.shape[1] <= SPEC.max_pixels
    return True


def check_audio(data: bytes) -> bool:
    """decode_audio: a mono float32 waveform within the duration limit (True) or MediaError (False)."""
    try:
        wave = media.decode_audio(
            data, sample_rate=SPEC.sample_rate, max_seconds=SPEC.max_seconds, name="fuzz"
        )
    except media.MediaError:
        return False
    assert wave.ndim == 1 and wave.dtype == np.float32 and wave.size > 0
    assert wave.size <= (SPEC.max_seconds + 1) * SPEC.sample_rate
    return True
