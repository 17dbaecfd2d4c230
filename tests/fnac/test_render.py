"""The renderer (fnac/render/): timeline rules, the YUV painter against the PNG overlay, and overlay MP4s
read back by an independent decoder (the FFmpeg CLI: ffprobe for the streams, ffmpeg for the pixels)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from fnac import media, postprocess, render
from fnac.windows import sweep_times
from tests.service.conftest import encode_audio, encode_image, make_clip, tone

FPS = 10
WIDTH, HEIGHT = 160, 120


@dataclass
class Box:
    x0: int
    y0: int
    x1: int
    y1: int
    score: float = 0.5


@dataclass
class Window:
    time: float
    heatmap: np.ndarray
    score: float = 0.6
    sounding: bool = True
    boxes: list = field(default_factory=list)


def _ffmpeg_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"the `{name}` CLI is missing: run scripts/system_deps.sh (part of `make test`)")
    return path


def probe(path: Path) -> dict:
    """ffprobe's view of a file: streams (with counted frames) and format."""
    out = subprocess.run(
        [
            *(_ffmpeg_tool("ffprobe"), "-v", "error", "-count_frames", "-show_streams", "-show_format"),
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    return json.loads(out.stdout)


def ffmpeg_frames(path: Path, width: int, height: int) -> np.ndarray:
    """Every frame of a video as the FFmpeg CLI decodes it (applying any rotation), uint8 [N, H, W, 3]."""
    out = subprocess.run(
        [
            _ffmpeg_tool("ffmpeg"),
            "-v",
            "error",
            "-i",
            str(path),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-vsync",
            "passthrough",
            "-",
        ],
        check=True,
        capture_output=True,
    )
    return np.frombuffer(out.stdout, np.uint8).reshape(-1, height, width, 3)


def moving_square_frames(n: int, width: int = WIDTH, height: int = HEIGHT) -> list[np.ndarray]:
    """A bright square crossing a grey, left-to-right graded frame (no symmetry: orientation errors show)."""
    frames = []
    ramp = np.linspace(40, 140, width, dtype=np.float32)[None, :, None]
    for i in range(n):
        frame = np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8).copy()
        frame[: height // 6, : width // 4] = (200, 60, 60)  # a red corner marks "top left"
        x = 10 + (i * 4) % (width - 40)
        frame[height // 3 : height // 3 + 30, x : x + 30] = 240
        frames.append(frame)
    return frames


def heatmap_windows(times, seed: int = 0, sounding=None) -> list[Window]:
    rng = np.random.default_rng(seed)
    windows = []
    for k, t in enumerate(times):
        heat = rng.normal(size=(7, 7)) * 5
        is_sounding = True if sounding is None else sounding[k]
        windows.append(
            Window(t, heat, score=0.5 + 0.01 * k, sounding=is_sounding, boxes=[Box(20, 30, 90, 100)])
        )
    return windows


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("render") / "clip.mp4"
    path.write_bytes(make_clip(moving_square_frames(40), tone(4.0, 44100), fps=FPS))
    return path


# ---------------------------------------------------------------------------------------------- rules


def test_timeline_interpolates_between_window_centres_and_holds_at_the_ends():
    a, b = np.zeros((7, 7)), np.ones((7, 7))
    timeline = render.Timeline([Window(2.0, b, sounding=False), Window(1.5, a)])  # any order in
    assert timeline.times.tolist() == [1.5, 2.0]
    np.testing.assert_allclose(timeline.heatmap_at(0.0), a)
    np.testing.assert_allclose(timeline.heatmap_at(1.5), a)
    np.testing.assert_allclose(timeline.heatmap_at(1.6), 0.2 * b)
    np.testing.assert_allclose(timeline.heatmap_at(1.9), 0.8 * b)
    np.testing.assert_allclose(timeline.heatmap_at(9.0), b)
    assert timeline.alpha_at(1.5) == render.OVERLAY_ALPHA
    assert timeline.alpha_at(1.75) == pytest.approx((render.OVERLAY_ALPHA + render.DIMMED_ALPHA) / 2)
    assert timeline.alpha_at(2.5) == render.DIMMED_ALPHA
    # Boxes, score and sounding come from the nearest window; a tie goes to the earlier one.
    assert [timeline.nearest(t) for t in (0.0, 1.7, 1.75, 1.8, 3.0)] == [0, 0, 0, 1, 1]
    # The frame on screen at a window centre shows that window; others show their own start time.
    assert timeline.frame_time(1.45, 1.55) == 1.5
    assert timeline.frame_time(1.55, 1.65) == 1.55


def test_painted_map_values_are_the_quantised_png_map():
    rng = np.random.default_rng(3)
    for height, width in [(120, 160), (720, 1280), (1280, 720), (36, 50)]:
        painter = render.FramePainter(height, width, (7, 7), render.ColorMatrix(0.299, 0.114, False))
        for _ in range(3):
            heatmap = rng.normal(size=(7, 7)) * 10
            luma, _ = painter.map_values(heatmap)
            expected = postprocess.quantize(
                postprocess.normalize(postprocess.upsample(heatmap, height, width))
            )
            difference = np.abs((luma >> 8).astype(int) - expected)
            assert difference.max() <= 1 and (difference > 0).mean() < 1e-3  # float ties at .5 only
    flat, _ = painter.map_values(np.full((7, 7), 3.0))
    assert not (flat >> 8).any()  # a constant map normalises to 0, as in the PNG


def test_yuv_painting_equals_rgb_blending():
    """The painter blends in YUV with the frame's own matrix: shown as RGB, it is the RGB overlay as any 4:2:0
    video of it would show it."""
    rng = np.random.default_rng(4)
    frame = moving_square_frames(5)[3]
    heatmap = rng.normal(size=(7, 7))
    boxes = [Box(10, 11, 50, 40)]
    for sounding in (True, False):
        for colours in ("bt709", "bt601"):
            source = _yuv_frame(frame, colours)
            painter = render.FramePainter(HEIGHT, WIDTH, (7, 7), render.ColorMatrix.of(source))
            target = _yuv_frame(np.zeros_like(frame), colours)
            alpha = render.map_alpha(sounding)
            painter.paint(
                render.plane_arrays(source),
                render.plane_arrays(target),
                heatmap,
                alpha,
                boxes if sounding else [],
            )
            shown = target.to_ndarray(format="rgb24").astype(int)
            normalized = postprocess.normalize(postprocess.upsample(heatmap, HEIGHT, WIDTH))
            reference = source.to_ndarray(format="rgb24")  # the frame as decoded, before painting
            expected = render.overlay_image(reference, normalized, boxes, sounding=sounding)
            expected_420 = as_yuv420(expected, colours)
            difference = np.abs(shown - expected_420)
            assert difference.mean() < 1.5, (sounding, colours)
            assert np.percentile(difference, 99) <= 10, (sounding, colours)
            assert abs((shown - expected_420).mean()) < 1.0  # no bias beyond 8-bit rounding
            # Not a tolerance anything passes: painting with the other matrix's colours is visibly off.
            other = render.ColorMatrix(*((0.299, 0.114) if colours == "bt709" else (0.2126, 0.0722)), False)
            render.FramePainter(HEIGHT, WIDTH, (7, 7), other).paint(
                render.plane_arrays(source), render.plane_arrays(target), heatmap, alpha, []
            )
            wrong = np.abs(target.to_ndarray(format="rgb24").astype(int) - expected_420)
            assert wrong.mean() > 2 * difference.mean()


def as_yuv420(rgb: np.ndarray, colours: str = "bt601") -> np.ndarray:
    """An RGB picture as a yuv420p video of it shows it (colour at half resolution), int [H, W, 3]."""
    return _yuv_frame(rgb, colours).to_ndarray(format="rgb24").astype(int)


def _yuv_frame(rgb: np.ndarray, colours: str):
    import av

    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    space = {"bt709": 1, "bt601": 5}[colours]
    out = frame.reformat(format="yuv420p", dst_colorspace=space)
    out.colorspace = space
    return out


def test_not_sounding_dims_the_map_and_drops_the_boxes():
    frame = np.full((60, 80, 3), 100, np.uint8)
    normalized = np.tile(np.linspace(0, 1, 80, dtype=np.float32), (60, 1))
    box = [Box(10, 10, 40, 40)]
    loud = render.overlay_image(frame, normalized, box, sounding=True).astype(int)
    quiet = render.overlay_image(frame, normalized, box, sounding=False).astype(int)
    assert (loud[10, 20] == 255).all()  # the box's top line
    assert not (quiet == 255).all(axis=-1).any()
    assert np.abs(quiet - 100).mean() < 0.5 * np.abs(loud - 100).mean()  # closer to the bare frame


# ---------------------------------------------------------------------------------------------- video


def test_overlay_video_read_back_by_ffmpeg(clip, tmp_path):
    times = sweep_times(4.0, clip_seconds=3.0, stride=0.5)
    assert times == [1.5, 2.0, 2.5]
    windows = heatmap_windows(times, sounding=[True, False, True])
    out = tmp_path / "overlay.mp4"
    rendered = render.render_video(clip, windows, out, threshold=0.55)

    info = probe(out)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
    assert video["codec_name"] == "h264" and audio["codec_name"] == "aac"
    assert (video["width"], video["height"]) == (WIDTH, HEIGHT) == (rendered.width, rendered.height)
    source = next(s for s in probe(clip)["streams"] if s["codec_type"] == "video")
    assert int(video["nb_read_frames"]) == int(source["nb_read_frames"]) == rendered.frames == 40
    assert abs(float(video["duration"]) - 4.0) <= 1 / FPS
    assert abs(float(audio["duration"]) - 4.0) <= 1 / FPS

    shown = ffmpeg_frames(out, WIDTH, HEIGHT)
    x0, y0, x1, y1 = render.label_region(HEIGHT, WIDTH)
    outside_label = np.ones((HEIGHT, WIDTH), bool)
    outside_label[y0:y1, x0:x1] = False
    for window in windows:
        index = round(window.time * FPS)
        frame = media.decode_clip(clip, t=window.time, clip_seconds=3.0, sample_rate=16000).frame
        normalized = postprocess.normalize(postprocess.upsample(window.heatmap, HEIGHT, WIDTH))
        expected = render.overlay_image(frame, normalized, window.boxes, sounding=window.sounding)
        # The PNG overlay as any yuv420p video of it shows it (colour at half resolution), then the encoder's
        # loss: H.264 at CRF 23 on a small frame.
        expected = as_yuv420(expected)
        difference = np.abs(shown[index].astype(int) - expected)[outside_label]
        assert difference.mean() < 3, window.time
        assert np.percentile(difference, 99) < 25, window.time
        # ... and not merely close to any overlay: a flat map there would be far off.
        flat = render.overlay_image(frame, normalized * 0 + 0.5, window.boxes, sounding=window.sounding)
        assert np.abs(shown[index].astype(int) - flat)[outside_label].mean() > 3 * difference.mean()
    # The label is there, and it differs between a sounding and a not-sounding window.
    label = lambda k: shown[round(windows[k].time * FPS)][y0:y1, x0:x1].astype(int)  # noqa: E731
    assert np.abs(label(0) - label(1)).mean() > 2


def test_ogl_video_draws_the_fused_map(clip, tmp_path):
    """On a model with an object branch the video shows the fused map (as the PNG does), not the AV map."""
    import fnac
    from tests.service.conftest import build_toy_model

    localizer = fnac.Localizer(build_toy_model(tmp_path / "toy_ogl.onnx", ogl_alpha=0.4))
    windows = localizer.run(video=clip, stride=0.5).windows
    assert windows and all(w.ogl_alpha == 0.4 and w.objectness is not None for w in windows)
    out = tmp_path / "ogl.mp4"
    localizer.render(clip, out)
    shown = ffmpeg_frames(out, WIDTH, HEIGHT)
    x0, y0, x1, y1 = render.label_region(HEIGHT, WIDTH)
    outside_label = np.ones((HEIGHT, WIDTH), bool)
    outside_label[y0:y1, x0:x1] = False
    for window in windows:
        frame = media.decode_clip(clip, t=window.time, clip_seconds=3.0, sample_rate=16000).frame
        fused = window.display_map((HEIGHT, WIDTH))
        av_only = postprocess.normalize(postprocess.upsample(window.heatmap, HEIGHT, WIDTH))
        assert np.abs(fused - av_only).mean() > 0.05  # the two maps differ visibly on this model
        expected = as_yuv420(render.overlay_image(frame, fused, window.boxes, sounding=window.sounding))
        other = as_yuv420(render.overlay_image(frame, av_only, window.boxes, sounding=window.sounding))
        got = shown[round(window.time * FPS)].astype(int)
        difference = np.abs(got - expected)[outside_label].mean()
        assert difference < 3, window.time
        assert np.abs(got - other)[outside_label].mean() > 2 * difference, window.time


@pytest.mark.anyio
async def test_ogl_api_video_is_the_localizer_video(clip, tmp_path):
    import fnac
    from tests.service.conftest import build_toy_model, serve_app

    model = build_toy_model(tmp_path / "toy_ogl.onnx", ogl_alpha=0.4)
    local = tmp_path / "local.mp4"
    fnac.Localizer(model).render(clip, local)
    async with serve_app(model) as live:
        upload = {"video": ("c.mp4", clip.read_bytes())}
        fused = await live.client.post("/localize", params={"format": "mp4"}, files=upload)
        av_only = await live.client.post("/localize", params={"format": "mp4", "ogl": "false"}, files=upload)
    assert fused.status_code == av_only.status_code == 200
    (tmp_path / "fused.mp4").write_bytes(fused.content)
    (tmp_path / "av.mp4").write_bytes(av_only.content)
    a = ffmpeg_frames(local, WIDTH, HEIGHT).astype(int)
    b, c = (
        ffmpeg_frames(tmp_path / "fused.mp4", WIDTH, HEIGHT),
        ffmpeg_frames(tmp_path / "av.mp4", WIDTH, HEIGHT),
    )
    assert np.abs(a - b).mean() < 0.5  # the service draws the fused map, as the Python API does
    assert np.abs(a - c).mean() > 1.0  # and ogl=false draws another (the audio-visual) map


def test_range_render_has_the_range_duration_and_frames(clip, tmp_path):
    windows = heatmap_windows([1.5, 2.0, 2.5])
    out = tmp_path / "range.mp4"
    rendered = render.render_video(clip, windows, out, start=1.25, end=2.75)
    info = probe(out)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
    # Frames on screen during [1.25, 2.75) at 10 fps: the one from 1.2 s, then 1.3 ... 2.7.
    assert int(video["nb_read_frames"]) == rendered.frames == 16
    assert abs(float(video["duration"]) - 1.5) <= 1 / FPS
    assert abs(float(audio["duration"]) - 1.5) <= 1 / FPS


def test_rotated_clip_renders_upright(clip, tmp_path):
    ffmpeg = _ffmpeg_tool("ffmpeg")
    rotated, upright = tmp_path / "rotated.mp4", tmp_path / "upright.mp4"
    subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(clip), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated)],
        check=True,
    )
    # The FFmpeg CLI applies the rotation when it re-encodes: the upright copy, made independently.
    subprocess.run([ffmpeg, "-v", "error", "-i", str(rotated), "-c:a", "copy", str(upright)], check=True)
    windows = heatmap_windows([1.5, 2.0, 2.5])
    rendered_rotated, rendered_upright = tmp_path / "r.mp4", tmp_path / "u.mp4"
    render.render_video(rotated, windows, rendered_rotated)
    render.render_video(upright, windows, rendered_upright)
    info = probe(rendered_rotated)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (HEIGHT, WIDTH)  # displayed size, and no rotation left
    assert not any("rotation" in d for d in video.get("side_data_list", []))
    a = ffmpeg_frames(rendered_rotated, HEIGHT, WIDTH).astype(int)
    b = ffmpeg_frames(rendered_upright, HEIGHT, WIDTH).astype(int)
    assert a.shape == b.shape
    # Frame for frame the same picture (the content has no symmetry: a wrong turn or mirror shows).
    assert np.abs(a - b).mean() < 3
    assert np.abs(a - b[:, ::-1, ::-1]).mean() > 10


def test_render_limits(clip, tmp_path):
    windows = heatmap_windows([1.5, 2.0, 2.5])
    with pytest.raises(media.MediaTooLarge) as too_long:
        render.render_video(clip, windows, tmp_path / "x.mp4", limits=render.RenderLimits(max_seconds=2.0))
    assert too_long.value.code == "render_too_long" and "2 s" in too_long.value.message
    with pytest.raises(media.MediaTooLarge) as too_many:
        render.render_video(clip, windows, tmp_path / "x.mp4", limits=render.RenderLimits(max_frames=20))
    assert too_many.value.code == "too_many_frames"
    render.render_video(
        clip, windows, tmp_path / "ok.mp4", start=1.0, end=3.0, limits=render.RenderLimits(max_frames=20)
    )
    with pytest.raises(media.MediaError) as bad_range:
        render.render_video(clip, windows, tmp_path / "x.mp4", start=3.0, end=2.0)
    assert bad_range.value.code == "invalid_range"
    with pytest.raises(media.MediaError) as past_end:
        render.render_video(clip, windows, tmp_path / "x.mp4", end=9.0)
    assert past_end.value.code == "time_out_of_range"


@pytest.mark.anyio
async def test_localizer_render_is_the_api_video(clip, tmp_path):
    import fnac
    from tests.service.conftest import build_toy_model, serve_app

    model = build_toy_model(tmp_path / "toy.onnx")
    local = tmp_path / "local.mp4"
    rendered = fnac.Localizer(model).render(clip, local, start=0.5, end=3.5)
    assert (rendered.frames, rendered.width, rendered.height) == (30, WIDTH, HEIGHT)
    async with serve_app(model) as live:
        response = await live.client.post(
            "/localize",
            params={"format": "mp4", "start": "0.5", "end": "3.5"},
            files={"video": ("c.mp4", clip.read_bytes())},
        )
    assert response.status_code == 200
    served = tmp_path / "served.mp4"
    served.write_bytes(response.content)
    a, b = ffmpeg_frames(local, WIDTH, HEIGHT), ffmpeg_frames(served, WIDTH, HEIGHT)
    assert a.shape == b.shape == (30, HEIGHT, WIDTH, 3)
    assert np.abs(a.astype(int) - b).mean() < 0.5  # same windows, same renderer, same encoder settings


def test_score_video_out_writes_one_overlay_per_clip(clip, tmp_path):
    import fnac
    from fnac.cli import main as fnac_main
    from tests.service.conftest import build_toy_model

    model = build_toy_model(tmp_path / "toy.onnx")
    image = tmp_path / "pair.png"  # a frame + audio pair gets no video: there is no clip to draw on
    image.write_bytes(encode_image(moving_square_frames(1)[0]))
    (tmp_path / "pair.wav").write_bytes(encode_audio(tone(3.0, 16000), 16000))
    listing = tmp_path / "items.csv"
    listing.write_text(f"id,video,image,audio\ncrossing,{clip},,\npair,,{image},{tmp_path / 'pair.wav'}\n")
    out, videos = tmp_path / "scores.jsonl", tmp_path / "videos"
    argv = ["score", "--model", str(model), "--video-out", str(videos), "--no-progress", "-o", str(out)]
    assert fnac_main([*argv, str(listing)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    crossing = [line for line in lines if line["id"] == "crossing"]
    assert [line["time"] for line in crossing] == [1.5, 2.0, 2.5]  # --video-out sweeps every 0.5 s
    assert {line["video"] for line in crossing} == {str(videos / "crossing.mp4")}
    assert all("video" not in line for line in lines if line["id"] == "pair")
    assert sorted(p.name for p in videos.iterdir()) == ["crossing.mp4"]
    local = tmp_path / "local.mp4"
    fnac.Localizer(model).render(clip, local)
    a, b = ffmpeg_frames(videos / "crossing.mp4", WIDTH, HEIGHT), ffmpeg_frames(local, WIDTH, HEIGHT)
    assert a.shape == b.shape == (40, HEIGHT, WIDTH, 3)
    assert np.abs(a.astype(int) - b).mean() < 0.5  # the same video the Python API writes


@pytest.mark.parametrize(
    ("codec", "pix_fmt"), [("libx264rgb", "rgb24"), ("libx264", "yuv444p"), ("mjpeg", "yuvj422p")]
)
def test_sources_in_other_pixel_formats_keep_their_colours(codec, pix_fmt, tmp_path):
    """RGB-coded, 4:4:4 and full-range sources: painted with the right matrix and range, tagged so."""
    import av

    frames = moving_square_frames(30)
    path = tmp_path / f"clip_{pix_fmt}.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        video = out.add_stream(codec, rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, pix_fmt
        audio = out.add_stream("aac", rate=44100, layout="mono")
        for frame in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=pix_fmt)))
        out.mux(video.encode())
        wave = tone(3.0, 44100)
        for start in range(0, wave.size, 1024):
            chunk = av.AudioFrame.from_ndarray(
                wave[None, start : start + 1024].copy(), format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = 44100, start
            out.mux(audio.encode(chunk))
        out.mux(audio.encode())
    window = heatmap_windows([1.5])[0]
    rendered = tmp_path / "overlay.mp4"
    render.render_video(path, [window], rendered)
    shown = ffmpeg_frames(rendered, WIDTH, HEIGHT)[15].astype(int)
    frame = media.decode_clip(path, t=1.5, clip_seconds=3.0, sample_rate=16000).frame
    normalized = postprocess.normalize(postprocess.upsample(window.heatmap, HEIGHT, WIDTH))
    expected = as_yuv420(render.overlay_image(frame, normalized, window.boxes))
    x0, y0, x1, y1 = render.label_region(HEIGHT, WIDTH)
    outside_label = np.ones((HEIGHT, WIDTH), bool)
    outside_label[y0:y1, x0:x1] = False
    assert np.abs(shown - expected)[outside_label].mean() < 4, pix_fmt


def test_encoder_threads_by_frame_as_the_ffmpeg_cli_does(clip, tmp_path):
    """PyAV opens encoders with slice threads; x264 then splits each picture and scales far worse than the
    CLI's frame threads (the render benchmark's wall time went from 1.7x to 1.25x a transcode's when it
    changed), so the writer asks for frame threads."""
    import av
    from av.codec.context import ThreadType

    from fnac.render.encode import Writer

    with av.open(str(clip)) as source, av.open(str(tmp_path / "out.mp4"), "w") as output:
        video = source.streams.video[0]
        first = next(source.decode(video))
        writer = Writer(output, video, None, 0.0, float("inf"), video.average_rate, render.VideoEncoding())
        writer.start_video(first.width, first.height, first)
        context = writer.video_stream.codec_context
        assert context.thread_type == ThreadType.FRAME and context.thread_count == 0
