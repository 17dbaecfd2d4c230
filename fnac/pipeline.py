"""The localization pipeline: input -> decoded windows (display orientation) -> batched model -> results.

Every door onto the model (the HTTP route, `fnac score`, `fnac.Localizer`, the overlay renderer) runs these
stages and no copy of them:

1. decode: `decode_video` / `decode_image_audio` turn a clip, or a still frame + audio, into model inputs
   (`DecodedInput`): one window per time, at `t`, in the middle, or every `stride` seconds. Video frames are
   upright as a player shows them (`fnac.media` applies the display matrix), so sizes are displayed pixels.
2. model: `run_model` runs the windows through an ONNX `ModelRuntime` in batches (the service has its own
   micro-batcher in front of the same `ModelRuntime.run_maps`); a model with object-guided localization (OGL)
   also returns its objectness maps.
3. post-process: `localize_window` turns one window's raw heatmap and score into a `WindowResult`: boxes in
   displayed pixels, the `sounding` decision and the audio level. A window that is not sounding has no boxes
   unless `boxes="always"`. With OGL (`PostOptions.ogl_alpha`), boxes and images come from the fused map
   (`fnac.postprocess.fuse_objectness`, the official formula); `sounding` stays the audio-visual score's.

No torch and no web framework here: this runs in the serving image, in decode worker processes and in a plain
`pip install fnac[serve]`.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np
from PIL import Image

from fnac import contract, images, media, postprocess
from fnac.postprocess import Box
from fnac.windows import sweep_count, sweep_times

log = logging.getLogger("fnac.pipeline")

T = TypeVar("T")
R = TypeVar("R")
BoxesMode = Literal["sounding", "always"]
BOXES_MODES: tuple[str, ...] = ("sounding", "always")
DEFAULT_MAX_WINDOWS = contract.MAX_WINDOWS

# A frame given as pixels: uint8 [H, W, 3] RGB (as displayed), or a PIL image.
ImageInput = media.Source | np.ndarray | Image.Image


# ---------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class InputSpec:
    """What decoding needs: the model's input format (from its metadata) and the input limits."""

    image_size: int
    sample_rate: int
    clip_seconds: float
    max_seconds: float = media.DEFAULT_MAX_SECONDS
    max_pixels: int = media.DEFAULT_MAX_PIXELS
    max_windows: int = DEFAULT_MAX_WINDOWS

    @property
    def n_samples(self) -> int:
        return round(self.sample_rate * self.clip_seconds)

    @classmethod
    def for_model(cls, metadata, **limits) -> InputSpec:
        """The spec of a model (its `ModelMetadata`), with optional limits (max_seconds, max_pixels, ...)."""
        return cls(
            image_size=metadata.image_size,
            sample_rate=metadata.sample_rate,
            clip_seconds=metadata.clip_seconds,
            **limits,
        )


@dataclass(frozen=True)
class DecodedInput:
    """Model inputs cut from one upload: one entry per window, in time order."""

    times: list[float | None]  # window centre in seconds (None: a frame + audio without a time)
    images: list[np.ndarray]  # uint8 [S, S, 3] per window (the model's input size)
    audio: list[np.ndarray]  # float32 [N] per window
    frame_size: tuple[int, int]  # (height, width) of the frame as displayed
    duration: float | None  # clip / audio duration in seconds (None for a single clip window)
    frames: list[np.ndarray] | None = None  # the displayed full-size frame per window, when asked for


def decode_video(
    source: media.Source,
    spec: InputSpec,
    *,
    t: float | None = None,
    stride: float | None = None,
    keep_frames: bool = False,
    start: float | None = None,
    end: float | None = None,
    name: str = "upload",
    frame_threads: bool = False,
) -> DecodedInput:
    """A clip: one window at `t` (default the middle) or a sweep every `stride` seconds (with `start`/`end`:
    only the windows an overlay video of that stretch needs, `fnac.windows.sweep_span`).

    `keep_frames` also keeps each window's full-size displayed frame (overlay PNGs); without it only
    model-sized frames are kept, so a long sweep of large frames stays small in memory. `frame_threads`: a
    sweep decodes with FFmpeg's frame threads (`media.decode_clip_sweep`).
    """
    common = dict(
        clip_seconds=spec.clip_seconds,
        sample_rate=spec.sample_rate,
        max_seconds=spec.max_seconds,
        max_pixels=spec.max_pixels,
        name=name,
    )
    resize_while_decoding = None if keep_frames else spec.image_size
    duration = None
    if stride is not None:
        windows, duration = media.decode_clip_sweep(
            source,
            stride=stride,
            max_windows=spec.max_windows,
            image_size=resize_while_decoding,
            start=start,
            end=end,
            frame_threads=frame_threads,
            **common,
        )
    else:
        windows = [media.decode_clip(source, t=t, image_size=resize_while_decoding, **common)]
    images = [media.resize_image(w.frame, spec.image_size) if keep_frames else w.frame for w in windows]
    return DecodedInput(
        times=[w.time for w in windows],
        images=images,
        audio=[w.audio for w in windows],
        frame_size=windows[0].frame_size,
        duration=duration,
        frames=[w.frame for w in windows] if keep_frames else None,
    )


def decode_image_audio(
    image: ImageInput,
    audio: media.Source | tuple[np.ndarray, int],
    spec: InputSpec,
    *,
    t: float | None = None,
    stride: float | None = None,
    keep_frames: bool = False,
    image_name: str = "image",
    audio_name: str = "audio",
) -> DecodedInput:
    """A still frame + audio: the window centred in the audio (or at `t`), or a sweep every `stride` s.

    `image` is a file (path or bytes; EXIF orientation applied), a uint8 [H, W, 3] RGB array or a PIL image;
    `audio` is a file, or `(waveform, sample_rate)` with a float waveform in [-1, 1], mono or multichannel
    ([samples, channels] or [channels, samples]; channels are averaged). The window count is checked against
    the limit before any window is built.
    """
    frame = _open_frame(image, spec.max_pixels, image_name)
    wave = _load_audio(audio, spec, audio_name)
    duration = wave.size / spec.sample_rate
    times: list[float | None]
    if stride is not None:
        n = sweep_count(duration, clip_seconds=spec.clip_seconds, stride=stride)
        if n > spec.max_windows:
            raise media.MediaTooLarge(
                "too_many_windows",
                f"a sweep of '{audio_name}' every {stride:g} s gives {n:g} windows; the limit is "
                f"{spec.max_windows}, use a larger stride",
            )
        times = list(sweep_times(duration, clip_seconds=spec.clip_seconds, stride=stride))
    elif t is not None:
        if t < 0 or t > duration:
            raise media.MediaError(
                "time_out_of_range", f"t={t:g} s is outside '{audio_name}' (duration {duration:.3f} s)"
            )
        times = [t]
    else:
        times = [None]  # no time: the window centred in the audio (the reference rule)
    resized = media.resize_image(frame, spec.image_size)
    windows = [
        media.fit_audio_window(wave, spec.n_samples, None if time is None else round(time * spec.sample_rate))
        for time in times
    ]
    # One frame serves every window: the lists hold the same array, not copies.
    pixels = np.asarray(frame, dtype=np.uint8) if keep_frames else None
    return DecodedInput(
        times=times,
        images=[resized] * len(windows),
        audio=windows,
        frame_size=(frame.height, frame.width),
        duration=duration,
        frames=[pixels] * len(windows) if keep_frames else None,
    )


def _open_frame(image: ImageInput, max_pixels: int, name: str) -> Image.Image:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise media.MediaError(
                "invalid_image",
                f"'{name}' must be a uint8 [H, W, 3] RGB array, not {image.dtype} {image.shape}",
            )
        if image.shape[0] * image.shape[1] > max_pixels:
            raise media.MediaTooLarge(
                "image_too_large",
                f"image '{name}' has {image.shape[0] * image.shape[1]} pixels; the limit is {max_pixels}",
            )
        return Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    return images.open_image(image, max_pixels=max_pixels, name=name)


def _load_audio(audio, spec: InputSpec, name: str) -> np.ndarray:
    if isinstance(audio, tuple):
        waveform, rate = audio
        waveform = np.asarray(waveform, dtype=np.float32)
        if waveform.ndim == 2:  # multichannel: the shorter axis is the channels (either layout is common)
            waveform = waveform.mean(axis=int(np.argmin(waveform.shape)), dtype=np.float32)
        if waveform.ndim != 1 or not waveform.size:
            raise media.MediaError(
                "empty_audio", f"'{name}' must be a non-empty mono or [samples, channels] waveform"
            )
        if not 0 < int(rate) <= media.MAX_SAMPLE_RATE:
            raise media.MediaError("unsupported_sample_rate", f"'{name}': sample rate {rate} is not usable")
        if waveform.size > spec.max_seconds * int(rate):
            raise media.MediaTooLarge(
                "audio_too_long", f"audio in '{name}' is longer than the limit of {spec.max_seconds:g} s"
            )
        return media.resample(waveform, int(rate), spec.sample_rate)
    return media.decode_audio(audio, sample_rate=spec.sample_rate, max_seconds=spec.max_seconds, name=name)


def decode_in_order(
    jobs: Iterable[T],
    decode: Callable[[T], R],
    *,
    workers: int,
    pool: Literal["thread", "process"] = "thread",
    on_crash: Callable[[T], R],
) -> Iterator[tuple[T, R]]:
    """`decode(job)` for every job, `workers` at a time (0: inline), yielding (job, result) in input order with
    a bounded number in flight (memory stays flat over any number of jobs).

    With ``pool="process"`` (`decode` must then pickle: a module-level function or a partial of one) a decoder
    that kills its process gives `on_crash(job)` for that job and the pool is rebuilt for the rest. The
    service does not use this: its decode workers sit behind the event loop (`service.decoding.DecodePool`).
    """
    if workers <= 0:
        for job in jobs:
            yield job, decode(job)
        return

    def new_pool() -> Executor:
        if pool == "process":
            return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        return ThreadPoolExecutor(workers, thread_name_prefix="fnac-decode")

    executor = new_pool()
    todo = iter(jobs)
    in_flight: deque[tuple[T, Future]] = deque()
    limit = 2 * workers + 2
    try:
        while True:
            while len(in_flight) < limit and (job := next(todo, _END)) is not _END:
                in_flight.append((job, executor.submit(decode, job)))
            if not in_flight:
                return
            job, future = in_flight.popleft()
            try:
                outcome = future.result()
            except BrokenProcessPool:
                outcome = on_crash(job)
                executor.shutdown(wait=False, cancel_futures=True)
                executor = new_pool()
                retry = [pending for pending, _ in in_flight]
                in_flight.clear()
                for pending in retry:
                    in_flight.append((pending, executor.submit(decode, pending)))
            yield job, outcome
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


_END = object()


# ---------------------------------------------------------------------------------------------- model


def run_model(
    runtime, images: Sequence[np.ndarray], audio: Sequence[np.ndarray], *, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """All windows through `runtime` (a `fnac.runtime.ModelRuntime`) in batches of at most `batch_size`:
    heatmaps float32 [n, h, w], scores float32 [n], and the objectness maps float32 [n, h, w] of a model with
    an OGL branch (None otherwise)."""
    heatmaps, scores, objectness = [], [], []
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        heatmap, score, objects = runtime.run_maps(np.stack(images[start:stop]), np.stack(audio[start:stop]))
        heatmaps.append(heatmap)
        scores.append(score)
        objectness.append(objects)
    has_objectness = all(objects is not None for objects in objectness)
    return (
        np.concatenate(heatmaps),
        np.concatenate(scores),
        np.concatenate(objectness) if has_objectness else None,
    )


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PostOptions:
    """How raw model outputs become results: the model's tau, the sounding decision and the box rules."""

    tau: float
    sounding_threshold: float
    silence_dbfs: float = postprocess.SILENCE_DBFS
    box_threshold: float = contract.BOX_THRESHOLD
    box_min_area: float = contract.BOX_MIN_AREA
    boxes: BoxesMode = "sounding"  # "always": boxes even for a window that is not sounding
    # OGL fusion weight of the audio-visual map (the model's `ogl_alpha`); None serves the audio-visual map
    # alone (a model without an object branch, or OGL turned off for a request).
    ogl_alpha: float | None = None

    def __post_init__(self):
        if self.boxes not in BOXES_MODES:
            raise ValueError(f"boxes must be one of {', '.join(BOXES_MODES)}, not {self.boxes!r}")
        if self.ogl_alpha is not None and not 0.0 <= self.ogl_alpha <= 1.0:
            raise ValueError(f"ogl_alpha must be between 0 and 1, not {self.ogl_alpha}")


def ogl_alpha_for(metadata, ogl: bool | None = None) -> float | None:
    """The OGL fusion weight a request gets: the model's `ogl_alpha` unless `ogl` is False (the audio-visual
    map alone); asking for OGL (`ogl=True`) from a model without an object branch is an error."""
    if ogl is True and metadata.ogl_alpha is None:
        raise ValueError(
            "this model has no object branch for object-guided localization (ogl); export it with "
            "fnac export --ogl-weights"
        )
    return None if ogl is False else metadata.ogl_alpha


def sounding_threshold_for(metadata, override: float | None = None) -> tuple[float, str]:
    """The sounding threshold and where it came from: `override` ("settings"), the model's calibrated value
    ("metadata"), or the fallback ("fallback", logged once per call)."""
    from fnac.runtime import FALLBACK_SOUNDING_THRESHOLD

    if override is not None:
        return float(override), "settings"
    if metadata.sounding_threshold is not None:
        return float(metadata.sounding_threshold), "metadata"
    log.warning(
        "model has no calibrated sounding_threshold; using the fallback %.2f", FALLBACK_SOUNDING_THRESHOLD
    )
    return FALLBACK_SOUNDING_THRESHOLD, "fallback"


@dataclass(frozen=True)
class WindowResult:
    """One window's answer. `boxes` are in displayed pixels of the frame (x1/y1 exclusive), best first; empty
    when the window is not sounding (unless asked for with boxes="always")."""

    time: float | None
    heatmap: np.ndarray  # float32 [h, w], the model's map as it left the network (cosine / tau)
    score: float  # raw audio-visual cosine: max of heatmap x tau
    sounding: bool
    audio_level_dbfs: float
    boxes: list[Box] = field(default_factory=list)
    objectness: np.ndarray | None = None  # float32 [h, w], the OGL branch's raw map (models with one)
    ogl_alpha: float | None = None  # set when boxes and images come from the fused map

    @property
    def served_map(self) -> str:
        """Which map the boxes and images come from: "av_obj" (OGL fusion) or "av" (audio-visual alone)."""
        return "av_obj" if self.ogl_alpha is not None else "av"

    def display_map(self, frame_size: tuple[int, int]) -> np.ndarray:
        """The served map drawn on a frame of `frame_size` (height, width), normalised to [0, 1]."""
        return display_map(self.heatmap, frame_size, self.objectness, self.ogl_alpha)


@dataclass(frozen=True)
class Result:
    """A whole answer: the windows plus the clip-level facts (displayed frame size, duration)."""

    width: int
    height: int
    duration: float | None
    stride: float | None
    windows: list[WindowResult]

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.height, self.width


def localize_window(
    heatmap: np.ndarray,
    score: float,
    audio: np.ndarray,
    frame_size: tuple[int, int],
    options: PostOptions,
    *,
    time: float | None = None,
    objectness: np.ndarray | None = None,
) -> WindowResult:
    """Post-process one window: the audio level, the sounding decision and (when wanted) the boxes, found on
    the heatmap upsampled to the displayed `frame_size` (height, width), fused with the window's `objectness`
    map when the options ask for OGL and the model gave one."""
    level = postprocess.audio_level_dbfs(audio)
    sounding = postprocess.is_sounding(float(score), level, options.sounding_threshold, options.silence_dbfs)
    alpha = options.ogl_alpha if objectness is not None else None
    boxes: list[Box] = []
    if sounding or options.boxes == "always":
        boxes = postprocess.localize(
            heatmap,
            frame_size,
            tau=options.tau,
            threshold=options.box_threshold,
            min_area=options.box_min_area,
            objectness=objectness,
            ogl_alpha=alpha,
        ).boxes
    return WindowResult(
        time=time,
        heatmap=np.asarray(heatmap, dtype=np.float32),
        score=float(score),
        sounding=sounding,
        audio_level_dbfs=level,
        boxes=boxes,
        objectness=None if objectness is None else np.asarray(objectness, dtype=np.float32),
        ogl_alpha=alpha,
    )


def localize_decoded(
    decoded: DecodedInput,
    heatmaps: Sequence[np.ndarray],
    scores: Sequence[float],
    options: PostOptions,
    *,
    stride: float | None = None,
    objectness: Sequence[np.ndarray] | None = None,
) -> Result:
    """Every window of `decoded` post-processed, with the clip-level facts (`objectness`: the windows' OGL
    maps, from a model with an object branch)."""
    objects = [None] * len(heatmaps) if objectness is None else objectness
    windows = [
        localize_window(heatmap, score, audio, decoded.frame_size, options, time=time, objectness=obj)
        for time, heatmap, score, audio, obj in zip(
            decoded.times, heatmaps, scores, decoded.audio, objects, strict=True
        )
    ]
    height, width = decoded.frame_size
    return Result(width=width, height=height, duration=decoded.duration, stride=stride, windows=windows)


def display_map(
    heatmap: np.ndarray,
    frame_size: tuple[int, int],
    objectness: np.ndarray | None = None,
    ogl_alpha: float | None = None,
) -> np.ndarray:
    """The map drawn on a frame: `heatmap` upsampled to `frame_size` (height, width), min-max normalised to
    [0, 1] (the PNG and overlay rules of `fnac.postprocess`), fused with `objectness` when it and `ogl_alpha`
    are given (OGL)."""
    return postprocess.served_map(heatmap, frame_size, objectness, ogl_alpha)[1]
