"""Writing and reading the synthetic benchmark's media files: 16-bit PCM WAV and H.264 + AAC MP4."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM mono WAV of a float waveform in [-1, 1]."""
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(float32 mono waveform in [-1, 1], sample rate) of a 16-bit PCM WAV such as `wav_bytes` writes."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        channels, rate = w.getnchannels(), w.getframerate()
    audio = frames.reshape(-1, channels).mean(axis=1) / 32768.0
    return audio.astype(np.float32), rate


def write_mp4(
    path: str | Path, image: np.ndarray, audio: np.ndarray, sample_rate: int, fps: int = 10
) -> Path:
    """An H.264 + AAC clip: the (constant) frame for as long as the audio lasts."""
    import av

    path = Path(path)
    seconds = audio.size / sample_rate
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = image.shape[1], image.shape[0]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "23", "preset": "veryfast", "threads": "1"}
        audio_stream = container.add_stream("aac", rate=sample_rate)
        audio_stream.layout = "mono"
        for _ in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        samples = np.clip(audio, -1, 1).astype(np.float32)
        chunk = 1024
        for start in range(0, samples.size, chunk):
            piece = samples[start : start + chunk][None, :]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            for packet in audio_stream.encode(frame):
                container.mux(packet)
        for packet in audio_stream.encode():
            container.mux(packet)
    return path
