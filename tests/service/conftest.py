"""Fixtures for the service tests: a toy ONNX model honouring docs/CONTRACT.md, generated media, a live app.

The toy model is small but honest about its inputs: heatmap = (2 x brightness - 1) x tanh(10 x audio RMS) / tau,
pooled to 7 x 7, and score = max(heatmap) x tau. So a bright square lights up where it is, silence gives a
flat zero map with score 0 (not sounding), and a loud tone with a bright square gives a score near 1.

With `ogl_alpha`, the toy model also has the OGL contract's `objectness` output: the "redness" of the frame,
max(0, R - (G + B) / 2) / 255, pooled to 7 x 7 the same way, so a red square is an "object" that does not sound.
"""

from __future__ import annotations

import io
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from service.config import Settings
from service.main import create_app

TOY_IMAGE_SIZE = 28
TOY_SAMPLE_RATE = 16000
TOY_CLIP_SECONDS = 3.0
TOY_TAU = 0.03
TOY_SOUNDING_THRESHOLD = 0.3


def toy_heatmap(image: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, float]:
    """numpy reference of the toy graph for one input: image uint8 [S, S, 3], audio float32 [N]."""
    brightness = image.astype(np.float32).mean(axis=2) / 255.0
    pooled = brightness.reshape(7, 4, 7, 4).mean(axis=(1, 3))
    loudness = np.tanh(10.0 * np.sqrt(np.mean(audio.astype(np.float32) ** 2)))
    heatmap = (2.0 * pooled - 1.0) * loudness / TOY_TAU
    return heatmap.astype(np.float32), float(heatmap.max() * TOY_TAU)


def toy_objectness(image: np.ndarray) -> np.ndarray:
    """numpy reference of the toy OGL model's objectness for one image uint8 [S, S, 3]."""
    rgb = image.astype(np.float32)
    redness = np.maximum(rgb[..., 0] - (rgb[..., 1] + rgb[..., 2]) / 2, 0.0) / 255.0
    return redness.reshape(7, 4, 7, 4).mean(axis=(1, 3)).astype(np.float32)


def build_toy_model(
    path: Path, *, sounding_threshold: float | None = TOY_SOUNDING_THRESHOLD, ogl_alpha: float | None = None
) -> Path:
    from onnx import TensorProto, checker, helper, save

    s, n = TOY_IMAGE_SIZE, round(TOY_SAMPLE_RATE * TOY_CLIP_SECONDS)

    def const(name, values, dtype=TensorProto.FLOAT):
        values = np.asarray(values)
        return helper.make_node(
            "Constant",
            [],
            [name],
            value=helper.make_tensor(name, dtype, values.shape, values.flatten().tolist()),
        )

    nodes = [
        const("c255", 255.0),
        const("c2", 2.0),
        const("c1", 1.0),
        const("c10", 10.0),
        const("ctau", TOY_TAU),
        const("ax1", [1], TensorProto.INT64),
        const("ax12", [1, 2], TensorProto.INT64),
        helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["image_f", "c255"], ["image_01"]),
        helper.make_node("ReduceMean", ["image_01"], ["brightness"], axes=[3], keepdims=1),  # [B,S,S,1]
        helper.make_node("Transpose", ["brightness"], ["brightness_nchw"], perm=[0, 3, 1, 2]),  # [B,1,S,S]
        helper.make_node("AveragePool", ["brightness_nchw"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Squeeze", ["pooled", "ax1"], ["visual"]),  # [B,7,7]
        helper.make_node("Mul", ["visual", "c2"], ["visual2"]),
        helper.make_node("Sub", ["visual2", "c1"], ["visual_pm"]),  # in [-1, 1]
        helper.make_node("Mul", ["audio", "audio"], ["power"]),
        helper.make_node("ReduceMean", ["power"], ["mean_power"], axes=[1], keepdims=0),  # [B]
        helper.make_node("Sqrt", ["mean_power"], ["rms"]),
        helper.make_node("Mul", ["rms", "c10"], ["rms10"]),
        helper.make_node("Tanh", ["rms10"], ["loudness"]),
        helper.make_node("Unsqueeze", ["loudness", "ax12"], ["loudness_b11"]),  # [B,1,1]
        helper.make_node("Mul", ["visual_pm", "loudness_b11"], ["cosine"]),
        helper.make_node("Div", ["cosine", "ctau"], ["heatmap"]),
        helper.make_node("ReduceMax", ["heatmap"], ["peak"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["peak", "ctau"], ["score"]),
    ]
    outputs = [
        helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, ["batch", 7, 7]),
        helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]),
    ]
    if ogl_alpha is not None:
        nodes += [
            const("credness", [1.0, -0.5, -0.5]),
            const("ax3", [3], TensorProto.INT64),
            helper.make_node("Mul", ["image_f", "credness"], ["weighted"]),
            helper.make_node("ReduceSum", ["weighted", "ax3"], ["red_sum"], keepdims=1),  # [B,S,S,1]
            helper.make_node("Div", ["red_sum", "c255"], ["red_01"]),
            helper.make_node("Relu", ["red_01"], ["redness"]),
            helper.make_node("Transpose", ["redness"], ["redness_nchw"], perm=[0, 3, 1, 2]),
            helper.make_node(
                "AveragePool", ["redness_nchw"], ["red_pooled"], kernel_shape=[4, 4], strides=[4, 4]
            ),
            helper.make_node("Squeeze", ["red_pooled", "ax1"], ["objectness"]),  # [B,7,7]
        ]
        outputs.append(helper.make_tensor_value_info("objectness", TensorProto.FLOAT, ["batch", 7, 7]))
    graph = helper.make_graph(
        nodes,
        "toy_fnac",
        [
            helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", s, s, 3]),
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", n]),
        ],
        outputs,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fnac-tests")
    model.ir_version = 8
    props = {
        "fnac_format_version": "1",
        "sample_rate": str(TOY_SAMPLE_RATE),
        "clip_seconds": str(TOY_CLIP_SECONDS),
        "image_size": str(TOY_IMAGE_SIZE),
        "tau": str(TOY_TAU),
        "spectrogram": json.dumps(
            {"nperseg": 512, "noverlap": 274, "scale": 12.0, "eps": 1e-07, "window": "tukey0.25"}
        ),
        "model_name": "toy-brightness-loudness",
        "training_data": "none (test fixture)",
        "weights_sha256": "0" * 64,
        "fnac_version": "test",
        "precision": "fp32",
        "heatmap_size": "7",
    }
    if sounding_threshold is not None:
        props["sounding_threshold"] = str(sounding_threshold)
    if ogl_alpha is not None:
        props["ogl_alpha"] = str(ogl_alpha)
    helper.set_model_props(model, props)
    checker.check_model(model)
    save(model, str(path))
    return path


@pytest.fixture(scope="session")
def toy_onnx_model(tmp_path_factory) -> Path:
    return build_toy_model(tmp_path_factory.mktemp("models") / "toy.onnx")


# ---------------------------------------------------------------------------------------------- apps


@pytest.fixture(scope="session")
def anyio_backend():
    return "asyncio"


@dataclass
class Live:
    app: FastAPI
    client: httpx.AsyncClient


@asynccontextmanager
async def serve_app(model: Path, **settings):
    """The app with its lifespan run (model loaded, workers started) and an httpx client on it."""
    settings.setdefault("decode_workers", 1)
    app = create_app(Settings(model=model, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fnac.test", timeout=60) as client:
            yield Live(app, client)


@pytest.fixture(scope="session")
async def live(toy_onnx_model):
    """The shared app for most API tests: toy model, two decode workers, default limits."""
    async with serve_app(toy_onnx_model, decode_workers=2, max_upload_mb=5, max_clip_seconds=30) as live:
        yield live


# ---------------------------------------------------------------------------------------------- media


def frame_with_square(width: int, height: int, box: tuple[int, int, int, int], base: int = 0) -> np.ndarray:
    """A dark frame with one white rectangle (x0, y0, x1, y1), the toy model's "sound source"."""
    frame = np.full((height, width, 3), base, np.uint8)
    x0, y0, x1, y1 = box
    frame[y0:y1, x0:x1] = 255
    return frame


def tone(seconds: float, rate: int, amplitude: float = 0.5, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_clip(
    frames,
    wave: np.ndarray | None,
    *,
    fps: int = 10,
    rate: int = 44100,
    container: str = "mp4",
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    channels: int = 2,
) -> bytes:
    """Encode frames (list of uint8 HxWx3, or a callable i -> frame with `frames.n`) and a mono wave."""
    frame_list = list(frames)
    height, width = frame_list[0].shape[:2]
    layout = "stereo" if channels == 2 else "mono"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        video = out.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream(audio_codec, rate=rate, layout=layout) if wave is not None else None
        for frame in frame_list:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if audio is not None:
            for start in range(0, wave.size, 1024):
                chunk = np.ascontiguousarray(np.stack([wave[start : start + 1024]] * channels))
                audio_frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                audio_frame.sample_rate = rate
                audio_frame.pts = start
                for packet in audio.encode(audio_frame):
                    out.mux(packet)
            for packet in audio.encode():
                out.mux(packet)
    return buffer.getvalue()


def encode_audio(wave: np.ndarray, rate: int, *, container: str = "wav", codec: str = "pcm_s16le") -> bytes:
    """Encode a waveform, [N] mono or [C, N] (C = 1 or 2), with any PyAV audio encoder."""
    planes = np.atleast_2d(np.asarray(wave, dtype=np.float32))
    layout = "stereo" if planes.shape[0] == 2 else "mono"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        sample_format = stream.codec_context.codec.audio_formats[0].name
        convert = av.AudioResampler(format=sample_format, layout=layout, rate=rate)
        for start in range(0, planes.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planes[:, start : start + 1024]), format="fltp", layout=layout
            )
            frame.sample_rate = rate
            frame.pts = start
            for converted in convert.resample(frame):
                for packet in stream.encode(converted):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def encode_image(image: np.ndarray | Image.Image, fmt: str = "PNG", **save_args) -> bytes:
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def frame_and_tone(
    width: int, height: int, box: tuple[int, int, int, int], seconds: float
) -> dict[str, tuple[str, bytes]]:
    """The multipart files of a frame + audio upload: a white square on black (PNG) and a 16 kHz tone (WAV)."""
    return {
        "image": ("frame.png", encode_image(frame_with_square(width, height, box))),
        "audio": ("tone.wav", encode_audio(tone(seconds, 16000), 16000)),
    }


# ---------------------------------------------------------------------------------------------- orientation


def _ffmpeg(*args: str) -> None:
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None:
        pytest.fail("the ffmpeg CLI is missing: run scripts/system_deps.sh")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


def rotated_copy(clip: bytes, degrees: int, tmp_path: Path) -> bytes:
    """`clip` with a rotate tag, as phones store portrait video: same packets, plus a display matrix that the
    ffmpeg CLI writes (`-metadata:s:v:0 rotate=N`; N counter-clockwise, as ffprobe's `rotation`)."""
    source, target = tmp_path / "stored.mp4", tmp_path / f"rotate{degrees}.mp4"
    source.write_bytes(clip)
    _ffmpeg("-i", str(source), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(target))
    return target.read_bytes()


def mirrored_copy(clip: bytes, degrees: int, *, hflip: bool = False, vflip: bool = False) -> bytes:
    """`clip` remuxed by PyAV with a display matrix of a rotation and mirrors (the ffmpeg 5.1 CLI cannot
    write mirrors)."""
    source, buffer = av.open(io.BytesIO(clip)), io.BytesIO()
    with source, av.open(buffer, "w", format="mp4") as out:
        streams = {}
        for stream in (source.streams.video[0], source.streams.audio[0]):
            streams[stream.index] = out.add_stream_from_template(stream)
        streams[source.streams.video[0].index].set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        for packet in source.demux():
            if packet.dts is None:  # the demuxer's end-of-stream packets
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return buffer.getvalue()


def upright_copy(clip: bytes, tmp_path: Path) -> bytes:
    """A re-encode of `clip` by the ffmpeg CLI, which applies the display matrix (autorotation): the clip as
    a player shows it, stored upright, nearly lossless."""
    source, target = tmp_path / "tagged.mp4", tmp_path / "upright.mp4"
    source.write_bytes(clip)
    _ffmpeg(
        "-i", str(source), "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", "-c:a", "copy", str(target)
    )
    return target.read_bytes()
