"""Encoding the overlay video: the encoder settings and the MP4 writer (H.264 video, the clip's audio as AAC)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from fnac.render.yuv import ColorMatrix


@dataclass(frozen=True)
class VideoEncoding:
    """Encoder settings of the overlay video; `ffmpeg_args` gives the same settings to the FFmpeg CLI."""

    preset: str = "veryfast"
    crf: int = 23
    audio_bitrate: int = 128_000

    def x264_options(self) -> dict[str, str]:
        return {"preset": self.preset, "crf": str(self.crf)}

    def ffmpeg_args(self) -> list[str]:
        return [
            *("-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf), "-pix_fmt", "yuv420p"),
            *("-c:a", "aac", "-b:a", str(self.audio_bitrate)),
        ]


class Writer:
    """Encodes painted frames and the clip's audio into an open MP4 container.

    The output starts at `begin`: video timestamps are the source's, shifted; audio is cut to [begin, finish)
    by sample position. Audio decoded before the first video frame waits, since the MP4 header needs both
    streams.
    """

    def __init__(
        self, output, video, audio, begin: float, finish: float, fps: Fraction, encoding: VideoEncoding
    ):
        self.output, self.source_video, self.begin, self.finish = output, video, begin, finish
        self.fps, self.encoding = fps, encoding
        self.time_base = video.time_base or Fraction(1, 90000)
        self.video_stream = None
        self.waiting: list[av.AudioFrame] = []
        self.audio_stream = None
        self.audio_rate = None
        if audio is not None and audio.codec_context.sample_rate:
            self.audio_rate = audio.codec_context.sample_rate
            channels = audio.codec_context.channels or 1
            self.layout = "mono" if channels == 1 else "stereo"
            self.resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.audio_rate)
            self.audio_start = (
                float(audio.start_time * audio.time_base) if audio.start_time is not None else 0.0
            )
        self.position: int | None = None  # next input sample, counted from the audio's start
        self.written = 0  # audio samples written

    def start_video(self, width: int, height: int, first: av.VideoFrame) -> None:
        stream = self.output.add_stream("libx264", rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        context = stream.codec_context
        context.time_base = self.time_base
        context.options = self.encoding.x264_options()
        context.thread_count = 0  # as many as x264 wants, as the FFmpeg CLI does
        # PyAV opens encoders with slice threads; the CLI lets x264 thread by frame, which scales far better.
        context.thread_type = "FRAME"
        # Same colour tags as the source, so players convert the painted YUV back with the same matrix.
        context.colorspace = first.colorspace
        context.color_range = 2 if ColorMatrix.of(first).full_range else 1
        context.color_primaries = first.color_primaries
        context.color_trc = first.color_trc
        self.video_stream = stream
        if self.audio_rate is not None:
            self.audio_stream = self.output.add_stream("aac", rate=self.audio_rate)
            self.audio_stream.layout = self.layout
            self.audio_stream.bit_rate = self.encoding.audio_bitrate
        for frame in self.waiting:
            self._audio(frame)
        self.waiting.clear()

    def video(self, frame: av.VideoFrame, shown_from: float, shown_until: float) -> None:
        pts = round((shown_from - self.begin) / self.time_base)
        frame.pts = pts
        frame.duration = max(1, round((shown_until - self.begin) / self.time_base) - pts)
        frame.time_base = self.time_base
        self.output.mux(self.video_stream.encode(frame))

    def audio(self, frame: av.AudioFrame) -> None:
        if self.audio_rate is None:
            return
        if self.video_stream is None:
            self.waiting.append(frame)
        else:
            self._audio(frame)

    def _audio(self, frame: av.AudioFrame) -> None:
        rate = self.audio_rate
        if self.position is None:
            first = frame.time - self.audio_start if frame.time is not None else 0.0
            self.position = round(first * rate)
            gap = self.position - round(self.begin * rate)
            if gap > 0:  # after a seek the audio may start a little late: keep it in sync with silence
                self._encode(np.zeros((1 if self.layout == "mono" else 2, gap), dtype=np.float32))
        for converted in self.resampler.resample(frame):
            samples = converted.to_ndarray()  # [channels, n] float32
            lo = round(self.begin * rate) - self.position
            hi = (round(self.finish * rate) if math.isfinite(self.finish) else math.inf) - self.position
            self.position += samples.shape[1]
            kept = samples[:, max(0, lo) : max(0, min(samples.shape[1], hi))]
            if kept.shape[1]:
                self._encode(kept)

    def _encode(self, samples: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=self.layout)
        frame.sample_rate = self.audio_rate
        frame.pts = self.written
        frame.time_base = Fraction(1, self.audio_rate)
        self.written += samples.shape[1]
        self.output.mux(self.audio_stream.encode(frame))

    def close(self) -> None:
        for frame in self.waiting:  # no video frame came: nothing to write
            del frame
        self.output.mux(self.video_stream.encode(None))
        if self.audio_stream is not None:
            self.output.mux(self.audio_stream.encode(None))
