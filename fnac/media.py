"""Media decoding shared by the service and training: audio and video via PyAV (FFmpeg); still images are
`fnac.images`, the display orientation of video frames `fnac.orientation`.

No torch here. Every function either returns plain numpy arrays or raises a `MediaError` whose `code` and
`message` can be shown to a user as is. Input preprocessing that must match between training and serving
(`fit_audio_window`, `resize_image`, `resample`) lives here and nowhere else.
"""

from __future__ import annotations

import io
import math
import os
import re
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from fnac import contract
from fnac.errors import LocalizeError
from fnac.orientation import display_orientation, upright
from fnac.windows import sweep_count, sweep_span, sweep_times

Source = bytes | str | os.PathLike

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_SECONDS = 600.0
MAX_SAMPLE_RATE = (
    768_000  # the highest rate real audio uses; swresample takes seconds per call on GHz "rates"
)
_RESAMPLE_CHUNK = 65536


class MediaError(LocalizeError):
    """A media input that cannot be used, with a stable machine-readable `code` and a human message."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(code, message, status)


class MediaTooLarge(MediaError):
    """The input exceeds a configured limit (pixels, duration)."""


def in_words(exc: BaseException) -> str:
    """What a decoder said went wrong, without what means nothing to the sender: FFmpeg's error number and the
    '<none>' file name PyAV gives in-memory uploads, or the repr of the buffer Pillow read from."""
    text = getattr(exc, "strerror", None) or str(exc)
    text = re.sub(r"\[Errno -?\d+\]\s*", "", text)
    text = re.sub(r":?\s*'<none>'", "", text)
    text = re.sub(r"\s*<[^<>]* object at 0x[0-9a-f]+>", "", text)
    text = text.strip().rstrip(":").strip()
    return (text[:1].lower() + text[1:]) if text else type(exc).__name__


@dataclass(frozen=True)
class ClipWindow:
    """One model input cut from a clip: the frame shown at `time` and the audio window centred on it."""

    time: float  # seconds from the start of the clip
    frame: np.ndarray  # uint8 [H, W, 3] RGB as displayed, full resolution (or [S, S, 3] with image_size)
    audio: np.ndarray  # float32 [n_samples], mono, in [-1, 1]
    frame_size: tuple[int, int]  # (height, width) of the frame as a player displays it


def resize_image(image: np.ndarray | Image.Image, size: int) -> np.ndarray:
    """Resize uint8 [H, W, 3] (or an RGB PIL image) to [size, size, 3] with PIL bicubic (as torchvision's
    Resize on PIL images)."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- audio


def fit_audio_window(wave: np.ndarray, n_samples: int, center: int | None = None) -> np.ndarray:
    """Cut the model's audio window: float32 [n_samples] in [-1, 1].

    The rule (FNAC reference): the window of `n_samples` centred in the clip, or centred on sample `center`
    and shifted to stay inside the clip near its ends; a clip shorter than the window is tiled (repeated) to
    length, then cut to exactly `n_samples`. `wave` must already be mono.
    """
    wave = np.clip(np.asarray(wave, dtype=np.float32).reshape(-1), -1.0, 1.0)
    if wave.size == 0:
        raise MediaError("empty_audio", "the audio contains no samples")
    if wave.size < n_samples:
        return np.tile(wave, math.ceil(n_samples / wave.size))[:n_samples].copy()
    center = wave.size // 2 if center is None else center
    start = min(max(center - n_samples // 2, 0), wave.size - n_samples)
    return wave[start : start + n_samples].copy()


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample a mono float32 waveform with libswresample (the resampler `decode_audio` uses).

    The output has exactly round(len(wave) * to_rate / from_rate) samples.
    """
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if from_rate == to_rate:
        return wave.copy()
    n_out = round(wave.size * to_rate / from_rate)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=to_rate)
    chunks = []
    for start in range(0, wave.size, _RESAMPLE_CHUNK):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(wave[None, start : start + _RESAMPLE_CHUNK]), format="flt", layout="mono"
        )
        frame.sample_rate = from_rate
        frame.pts = start
        frame.time_base = Fraction(1, from_rate)
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    out = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if out.size < n_out:  # the resampler may hold back a sample or two at the very end
        out = np.concatenate([out, np.zeros(n_out - out.size, np.float32)])
    return out[:n_out].astype(np.float32, copy=False)


def read_pcm_wav(
    source: Source, sample_rate: int, max_seconds: float = DEFAULT_MAX_SECONDS, name: str = "upload"
) -> np.ndarray | None:
    """A plain 16-bit PCM WAV as float32 mono at `sample_rate`, sample for sample what the FFmpeg path of
    `decode_audio` returns (s16 / 32768, mean of the channels, the same `resample`), without FFmpeg's per-frame
    conversions (about half the time for a 3 s upload). None for anything else, which then goes through FFmpeg,
    so every error message comes from one place."""
    if isinstance(source, bytes | bytearray):
        if source[:4] != b"RIFF" or source[8:12] != b"WAVE":
            return None
        handle = io.BytesIO(source)
    else:
        if Path(source).suffix.lower() != ".wav":
            return None
        handle = str(Path(source))
    try:
        with wave.open(handle, "rb") as reader:
            if reader.getsampwidth() != 2 or reader.getcomptype() != "NONE":
                return None
            channels, rate = reader.getnchannels(), reader.getframerate()
            if channels < 1 or not 0 < rate <= MAX_SAMPLE_RATE:
                return None
            pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    except Exception:  # the stdlib parser is not hardened (RuntimeError on bad chunk sizes, ...)
        return None  # WAVE_FORMAT_EXTENSIBLE, float WAVs, damaged headers: FFmpeg decides
    if pcm.size == 0 or pcm.size % channels:
        return None
    if pcm.size // channels > max_seconds * rate:
        raise MediaTooLarge(
            "audio_too_long", f"audio in '{name}' is longer than the limit of {max_seconds:g} s"
        )
    samples = pcm.astype(np.float32)
    samples /= np.float32(32768)
    # The mean of one channel is the channel itself, bit for bit; skipping it saves a pass over the clip.
    mono = samples if channels == 1 else samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return _to_model_rate(mono, rate, sample_rate, name)


def decode_audio(
    source: Source, *, sample_rate: int, max_seconds: float = DEFAULT_MAX_SECONDS, name: str = "upload"
) -> np.ndarray:
    """Decode the first audio stream of any file FFmpeg reads to float32 mono at `sample_rate`.

    Mono is the mean of the channels, taken before resampling. Decoding stops with
    `MediaTooLarge(code="audio_too_long")` once more than `max_seconds` of audio has been seen. Plain 16-bit
    PCM WAVs take a faster path with the same result (`read_pcm_wav`).
    """
    fast = read_pcm_wav(source, sample_rate, max_seconds, name)
    if fast is not None:
        return fast
    with _open(source, name) as container:
        stream = _audio_stream(container, name)
        return _decode_audio_stream(container, stream, sample_rate, max_seconds, name)


def _decode_audio_stream(container, stream, sample_rate: int, max_seconds: float, name: str) -> np.ndarray:
    # Convert every frame to planar float at its own rate/layout; average channels; then one resampling pass.
    to_float = av.AudioResampler(format="fltp")
    chunks: list[np.ndarray] = []
    n_seen = 0
    source_rate = None
    try:
        for frame in container.decode(stream):
            source_rate = source_rate or frame.sample_rate
            if source_rate > MAX_SAMPLE_RATE:
                raise MediaError(
                    "unsupported_sample_rate",
                    f"audio in '{name}' claims {source_rate} Hz; the most we read is {MAX_SAMPLE_RATE} Hz",
                )
            for converted in to_float.resample(frame):
                planes = converted.to_ndarray()  # [channels, samples]
                chunks.append(planes[0] if len(planes) == 1 else planes.mean(axis=0, dtype=np.float32))
                n_seen += planes.shape[1]
            if source_rate and n_seen > max_seconds * source_rate:
                raise MediaTooLarge(
                    "audio_too_long", f"audio in '{name}' is longer than the limit of {max_seconds:g} s"
                )
    except av.FFmpegError as exc:
        if not chunks:
            raise MediaError(
                "corrupt_media", f"audio in '{name}' could not be decoded: {in_words(exc)}"
            ) from None
        # A damaged tail (e.g. a truncated upload): keep what decoded.
    if not chunks or source_rate is None:
        raise MediaError("empty_audio", f"the audio stream in '{name}' contains no samples")
    return _to_model_rate(np.concatenate(chunks), source_rate, sample_rate, name)


def _to_model_rate(mono: np.ndarray, source_rate: int, sample_rate: int, name: str) -> np.ndarray:
    try:
        wave = resample(mono, source_rate, sample_rate)
    except av.FFmpegError as exc:  # an absurd rate in the header (e.g. 2^31 - 1 Hz): swresample gives up
        raise MediaError(
            "corrupt_media",
            f"audio in '{name}' could not be resampled from {source_rate} Hz: {in_words(exc)}",
        ) from None
    if not wave.size:  # so few samples at so high a rate that nothing is left at the model rate
        raise MediaError("empty_audio", f"the audio stream in '{name}' contains no samples")
    return wave


# ---------------------------------------------------------------------------------------------- video


def clip_duration(source: Source, *, name: str = "upload") -> float:
    """Duration of a clip in seconds, from the container header or, failing that, by decoding its audio."""
    with _open(source, name) as container:
        duration = _reported_duration(container)
        if duration is None:
            stream = _audio_stream(container, name)
            wave = _decode_audio_stream(container, stream, 16000, DEFAULT_MAX_SECONDS, name)
            duration = wave.size / 16000
        return duration


def check_range(
    start: float | None, end: float | None, duration: float | None, name: str
) -> tuple[float, float]:
    """A stretch [start, end) of a clip, checked against its duration (None: unknown); the defaults are the
    whole clip. Returns (start, end), end clipped to the duration."""
    begin = 0.0 if start is None else float(start)
    length = math.inf if duration is None else duration
    finish = length if end is None else float(end)
    if begin < 0 or not begin < length:
        raise MediaError(
            "time_out_of_range", f"start={begin:g} s is outside clip '{name}' (duration {length:.3f} s)"
        )
    if finish <= begin:
        raise MediaError("invalid_range", f"end={finish:g} s is not after start={begin:g} s")
    if finish > length + 1e-3:
        raise MediaError(
            "time_out_of_range", f"end={finish:g} s is past the end of clip '{name}' ({length:.3f} s)"
        )
    return begin, min(finish, length)


def decode_clip(
    source: Source,
    *,
    t: float | None = None,
    clip_seconds: float,
    sample_rate: int,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    image_size: int | None = None,
    name: str = "upload",
) -> ClipWindow:
    """Decode one model input from a clip: the frame shown at `t` (default: the middle) and the audio window
    of `clip_seconds` centred on `t` (see `fit_audio_window`). With `image_size`, the frame comes back
    resized to image_size x image_size (`resize_image`)."""

    def choose(duration: float) -> list[float]:
        if t is None:
            return [duration / 2]
        if t < 0 or t > duration:
            raise MediaError(
                "time_out_of_range", f"t={t:g} s is outside clip '{name}' (duration {duration:.3f} s)"
            )
        return [t]

    windows, _ = _decode_windows(
        source, choose, clip_seconds, sample_rate, max_seconds, max_pixels, image_size, name
    )
    return windows[0]


def decode_clip_sweep(
    source: Source,
    *,
    stride: float,
    clip_seconds: float,
    sample_rate: int,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_windows: int = contract.MAX_WINDOWS,
    image_size: int | None = None,
    start: float | None = None,
    end: float | None = None,
    name: str = "upload",
    frame_threads: bool = False,
) -> tuple[list[ClipWindow], float]:
    """Decode windows every `stride` seconds over a whole clip (see `sweep_times`), or only those a stretch
    [start, end) of it needs (see `sweep_span`; an overlay video of that stretch).

    Returns the windows in time order and the clip duration. More than `max_windows` windows raises
    `MediaTooLarge(code="too_many_windows")`. With `image_size`, each frame is resized as soon as it is
    decoded, which keeps memory flat on long sweeps of large frames. `frame_threads` decodes the video with
    FFmpeg's frame threads: the same frames, sooner, for a little more CPU; for a caller that decodes one clip
    at a time, not for one that already runs a decoder per core.
    """

    def choose(duration: float) -> list[float]:
        if start is None and end is None:
            first, stop = 0, sweep_count(duration, clip_seconds=clip_seconds, stride=stride)
        else:
            begin, finish = check_range(start, end, duration, name)
            first, stop = sweep_span(
                duration, clip_seconds=clip_seconds, stride=stride, start=begin, end=finish
            )
        if stop - first > max_windows:
            span = (
                f"'{name}' ({duration:.1f} s)" if start is None and end is None else f"a stretch of '{name}'"
            )
            raise MediaTooLarge(
                "too_many_windows",
                f"a sweep of {span} every {stride:g} s gives {stop - first:g} windows; "
                f"the limit is {max_windows}, use a larger stride",
            )
        if duration <= clip_seconds:
            return sweep_times(duration, clip_seconds=clip_seconds, stride=stride)
        return [round(clip_seconds / 2 + k * stride, 6) for k in range(first, stop)]

    return _decode_windows(
        source, choose, clip_seconds, sample_rate, max_seconds, max_pixels, image_size, name, frame_threads
    )


def _decode_windows(
    source,
    choose_times,
    clip_seconds,
    sample_rate,
    max_seconds,
    max_pixels,
    image_size,
    name,
    frame_threads=False,
):
    n_samples = round(sample_rate * clip_seconds)
    with _open(source, name) as container:
        video = _video_stream(container, name)
        if frame_threads:
            video.thread_type = "AUTO"  # before the decoder opens
        audio = _audio_stream(container, name)
        duration = _check_clip_limits(container, video, max_pixels, max_seconds, name)
        try:
            wave = _decode_audio_stream(container, audio, sample_rate, max_seconds, name)
        except MediaTooLarge:
            raise MediaTooLarge(
                "clip_too_long", f"clip '{name}' is longer than the limit of {max_seconds:g} s"
            ) from None
        if duration is None:
            duration = wave.size / sample_rate
        times = choose_times(duration)
        frames = _frames_at(container, video, times, image_size, name)
    return [
        ClipWindow(time, frame, fit_audio_window(wave, n_samples, center=round(time * sample_rate)), size)
        for time, (frame, size) in zip(times, frames, strict=True)
    ], duration


def _check_clip_limits(container, video, max_pixels: int, max_seconds: float, name: str) -> float | None:
    """The header's duration (None when it has none), after checking the frame size and that duration against
    the limits, before any frame is decoded."""
    width, height = video.codec_context.width, video.codec_context.height
    if width * height > max_pixels:
        raise MediaTooLarge(
            "frame_too_large",
            f"video frames in '{name}' are {width}x{height}; the limit is {max_pixels} pixels",
        )
    duration = _reported_duration(container)
    if duration is not None and duration > max_seconds:
        raise MediaTooLarge(
            "clip_too_long", f"clip '{name}' lasts {duration:.1f} s; the limit is {max_seconds:g} s"
        )
    return duration


def iter_frames(
    source: Source,
    *,
    start: float = 0.0,
    end: float | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str = "upload",
) -> Iterator[tuple[float, np.ndarray]]:
    """Every frame of a clip's video stream starting in [start, end) (end None: to the last frame), in order,
    as (time in seconds from the start of the clip, uint8 [H, W, 3] RGB upright as displayed).

    For renderers: one frame at a time, so memory stays flat on long clips. The limits are checked before the
    first frame is decoded, as in `decode_clip`.
    """
    with _open(source, name) as container:
        stream = _video_stream(container, name)
        _check_clip_limits(container, stream, max_pixels, max_seconds, name)
        offset = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        try:
            if start > 0:
                container.seek(int((offset + start) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                frame_time = frame.time - offset
                if frame_time > max_seconds:
                    raise MediaTooLarge(
                        "clip_too_long", f"clip '{name}' is longer than the limit of {max_seconds:g} s"
                    )
                if frame_time < start - 1e-6:
                    continue
                if end is not None and frame_time >= end - 1e-6:
                    break
                yield frame_time, upright(frame.to_ndarray(format="rgb24"), display_orientation(frame))
        except av.FFmpegError as exc:
            raise MediaError(
                "corrupt_media", f"video in '{name}' could not be decoded: {in_words(exc)}"
            ) from None


def _frames_at(container, stream, times: list[float], image_size: int | None, name: str):
    """The frame shown at each time (the last frame starting at or before it), upright as a player shows it,
    with its displayed (height, width); `times` ascending."""

    def convert(frame) -> tuple[np.ndarray, tuple[int, int]]:
        rgb = upright(frame.to_ndarray(format="rgb24"), display_orientation(frame))
        return (rgb if image_size is None else resize_image(rgb, image_size)), rgb.shape[:2]

    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    try:
        container.seek(
            int((start + times[0]) / stream.time_base), stream=stream, backward=True, any_frame=False
        )
    except av.FFmpegError as exc:  # e.g. a video stream without a single frame (nothing to seek to)
        raise MediaError(
            "corrupt_media", f"video in '{name}' could not be decoded: {in_words(exc)}"
        ) from None
    frames: list[tuple[np.ndarray, tuple[int, int]]] = []
    shown = None  # the last decoded frame, as (time, VideoFrame)
    try:
        for frame in container.decode(stream):
            frame_time = frame.time - start if frame.time is not None else (shown[0] if shown else 0.0)
            while len(frames) < len(times) and frame_time > times[len(frames)] + 1e-6:
                frames.append(convert(shown[1] if shown else frame))
            if len(frames) == len(times):
                break
            shown = (frame_time, frame)
    except av.FFmpegError as exc:
        if shown is None:
            raise MediaError(
                "corrupt_media", f"video in '{name}' could not be decoded: {in_words(exc)}"
            ) from None
    if shown is None and len(frames) < len(times):
        raise MediaError("no_video_frames", f"the video stream in '{name}' contains no decodable frames")
    while len(frames) < len(times):  # times past the last frame show the last frame
        frames.append(convert(shown[1]))
    return frames


# ---------------------------------------------------------------------------------------------- helpers


def _open(source: Source, name: str):
    target = io.BytesIO(source) if isinstance(source, bytes | bytearray) else str(Path(source))
    if isinstance(target, io.BytesIO) and not source:
        raise MediaError("empty_upload", f"'{name}' is empty")
    try:
        return av.open(target, mode="r", metadata_errors="ignore")
    except FileNotFoundError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(
            "unreadable_media", f"'{name}' is not a media file FFmpeg can read ({in_words(exc)})"
        ) from None


def _audio_stream(container, name: str):
    if not container.streams.audio:
        found = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise MediaError(
            "no_audio_stream", f"audio stream missing in upload '{name}' (streams found: {found})"
        )
    return container.streams.audio[0]


def _video_stream(container, name: str):
    if not container.streams.video:
        found = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise MediaError(
            "no_video_stream", f"video stream missing in upload '{name}' (streams found: {found})"
        )
    stream = container.streams.video[0]
    if stream.codec_context is None:  # a codec id FFmpeg has no decoder for (e.g. a damaged header)
        raise MediaError(
            "unsupported_codec", f"the video stream in '{name}' uses a codec FFmpeg cannot decode"
        )
    return stream


def _reported_duration(container) -> float | None:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None
