"""The overlay video of a clip: decode, paint each frame by the timeline, encode (the rules in `fnac.render`)."""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from fnac import media
from fnac.orientation import display_orientation
from fnac.render.encode import VideoEncoding, Writer
from fnac.render.label import LabelPatch, label_patch
from fnac.render.painter import FramePainter
from fnac.render.timeline import Timeline, WindowLike
from fnac.render.yuv import ColorMatrix, as_yuv420, crop_even, plane_arrays, upright_planes

DEFAULT_STRIDE = 0.5  # seconds between the windows of an overlay video


@dataclass(frozen=True)
class RenderedVideo:
    """What `render_video` wrote."""

    frames: int
    width: int
    height: int
    start: float  # seconds into the source
    duration: float  # seconds of video written


@dataclass(frozen=True)
class RenderLimits:
    """Bounds on one overlay video: its length (the clip, or start..end), its frames and a frame's pixels."""

    max_seconds: float = 600.0
    max_frames: int = 36_000
    max_pixels: int = media.DEFAULT_MAX_PIXELS


def check_length(seconds: float, limits: RenderLimits, name: str) -> None:
    """`MediaTooLarge("render_too_long")` when an overlay video of this many seconds is beyond `limits`."""
    if seconds > limits.max_seconds:
        raise media.MediaTooLarge(
            "render_too_long",
            f"the overlay video of '{name}' would last {seconds:.1f} s; the limit is {limits.max_seconds:g} s: "
            "pick a shorter start..end stretch",
        )


def render_video(
    source: media.Source,
    windows: Sequence[WindowLike],
    out: str | os.PathLike | io.BufferedIOBase,
    *,
    start: float | None = None,
    end: float | None = None,
    threshold: float | None = None,
    limits: RenderLimits = RenderLimits(),
    encoding: VideoEncoding = VideoEncoding(),
    name: str = "upload",
) -> RenderedVideo:
    """Write the overlay MP4 of `source` (a clip: path or bytes) from `start` to `end` seconds (default: all
    of it), with the map, boxes and label of `windows` (the results of a sweep over the clip), to `out` (a
    path or a writable binary file).

    Raises `media.MediaError` for unusable input and `media.MediaTooLarge` (`render_too_long`,
    `too_many_frames`, `frame_too_large`) beyond `limits`.
    """
    timeline = Timeline(windows)
    if isinstance(out, str | os.PathLike):
        return _render_to_path(source, timeline, Path(out), start, end, threshold, limits, encoding, name)
    # The MP4 index goes in front of the data (fast start), which needs a real file to rewrite.
    with tempfile.TemporaryDirectory(prefix="fnac-render-") as folder:
        path = Path(folder) / "overlay.mp4"
        rendered = _render_to_path(source, timeline, path, start, end, threshold, limits, encoding, name)
        with path.open("rb") as written:
            while chunk := written.read(1 << 20):
                out.write(chunk)
    return rendered


def render_video_bytes(source: media.Source, windows: Sequence[WindowLike], **options) -> bytes:
    """`render_video` into memory: the MP4's bytes."""
    buffer = io.BytesIO()
    render_video(source, windows, buffer, **options)
    return buffer.getvalue()


def _render_to_path(
    source, timeline: Timeline, path: Path, start, end, threshold, limits: RenderLimits, encoding, name
) -> RenderedVideo:
    with media._open(source, name) as container:
        video = media._video_stream(container, name)
        audio = container.streams.audio[0] if container.streams.audio else None
        video.thread_type = "AUTO"  # frame-threaded decoding, as the FFmpeg CLI does
        width, height = video.codec_context.width, video.codec_context.height
        if width * height > limits.max_pixels:
            raise media.MediaTooLarge(
                "frame_too_large",
                f"video frames in '{name}' are {width}x{height}; the limit is {limits.max_pixels} pixels",
            )
        begin, finish = media.check_range(start, end, media._reported_duration(container), name)
        fps = video.average_rate or video.guessed_rate or Fraction(30)
        check_length(finish - begin, limits, name)
        if math.isfinite(finish) and (finish - begin) * fps > limits.max_frames:
            raise media.MediaTooLarge(
                "too_many_frames",
                f"the overlay video of '{name}' would have about {math.ceil((finish - begin) * fps)} frames "
                f"({float(fps):.4g} fps); the limit is {limits.max_frames}: pick a shorter start..end stretch",
            )
        with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as output:
            writer = Writer(output, video, audio, begin, finish, fps, encoding)
            painter: FramePainter | None = None
            labels: dict[int, LabelPatch] = {}
            count, shown_end = 0, begin
            target: av.VideoFrame | None = None  # one output frame, reused
            for item in _source_frames(container, video, audio, begin, finish, fps, name):
                if isinstance(item, av.AudioFrame):
                    writer.audio(item)
                    continue
                frame, shown_from, shown_until = item
                count += 1
                if count > limits.max_frames or shown_from - begin > limits.max_seconds:
                    raise media.MediaTooLarge(
                        "render_too_long",
                        f"the overlay video of '{name}' would exceed {limits.max_frames} frames or "
                        f"{limits.max_seconds:g} s: pick a shorter start..end stretch",
                    )
                orientation = display_orientation(frame)  # converted frames may lose the side data
                frame = as_yuv420(frame)
                planes = upright_planes(frame, orientation)
                if painter is None:
                    # x264 encodes 4:2:0 at even sizes only: an odd displayed size loses its last row/column.
                    even_h, even_w = planes[0].shape[0] // 2 * 2, planes[0].shape[1] // 2 * 2
                    painter = FramePainter(even_h, even_w, timeline.heatmaps.shape[1:], ColorMatrix.of(frame))
                    writer.start_video(even_w, even_h, frame)
                when = timeline.frame_time(shown_from, shown_until)
                nearest = timeline.nearest(when)
                window = timeline.windows[nearest]
                if nearest not in labels:
                    labels[nearest] = label_patch(
                        painter.height,
                        painter.width,
                        painter.colors,
                        window.score,
                        window.sounding,
                        threshold,
                    )
                if target is None:
                    target = av.VideoFrame(painter.width, painter.height, "yuv420p")
                target.make_writable()  # a new buffer only if the encoder still holds this one
                painted = plane_arrays(target)
                shown = timeline.heatmap_at(when)
                if timeline.objectness is not None:
                    shown = painter.fused(shown, timeline.objectness_at(when), timeline.ogl_alpha)
                painter.paint(
                    crop_even(planes),
                    painted,
                    shown,
                    timeline.alpha_at(when),
                    window.boxes if window.sounding else (),
                )
                painter.label(painted, labels[nearest])
                writer.video(target, max(shown_from, begin), min(shown_until, finish))
                shown_end = min(shown_until, finish)
            if painter is None:
                raise media.MediaError(
                    "no_video_frames", f"no video frames in '{name}' between {begin:g} s and {finish:g} s"
                )
            writer.close()
    return RenderedVideo(count, painter.width, painter.height, begin, shown_end - begin)


def _source_frames(
    container, video, audio, begin: float, finish: float, fps: Fraction, name: str
) -> Iterator[av.AudioFrame | tuple[av.VideoFrame, float, float]]:
    """The decoded audio frames, and the video frames on screen during [begin, finish), each with the time
    it is shown from and until (the next frame's time), in decoding order; times from the video's start."""
    video_start = float(video.start_time * video.time_base) if video.start_time is not None else 0.0
    if begin > 0:
        try:
            container.seek(int((video_start + begin) / video.time_base), stream=video, backward=True)
        except av.FFmpegError as exc:
            raise media.MediaError(
                "corrupt_media", f"video in '{name}' could not be decoded: {exc}"
            ) from None
    step = 1.0 / float(fps)
    held: tuple[av.VideoFrame, float] | None = None  # the last video frame, waiting for the next one's time
    streams = [s for s in (video, audio) if s is not None]
    try:
        for packet in container.demux(streams):
            for frame in packet.decode():
                if isinstance(frame, av.AudioFrame):
                    yield frame
                    continue
                shown = (
                    frame.time - video_start if frame.time is not None else (held[1] + step if held else 0.0)
                )
                if held is not None and shown > held[1]:
                    if held[1] >= finish:
                        return
                    if shown > begin:
                        yield held[0], held[1], shown
                held = (frame, shown) if held is None or shown > held[1] else held
    except av.FFmpegError as exc:
        if held is None:
            raise media.MediaError(
                "corrupt_media", f"video in '{name}' could not be decoded: {exc}"
            ) from None
        # A damaged tail: render what decoded.
    if held is not None and held[1] < finish:
        frame = held[0]
        length = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else step
        yield frame, held[1], min(held[1] + length, finish) if math.isfinite(finish) else held[1] + length
