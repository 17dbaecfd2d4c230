"""`fnac bench render`: the overlay MP4 of a clip (`fnac.render.render_video`) against the FFmpeg CLI transcoding
the same clip with the same encoder settings (`VideoEncoding.ffmpeg_args`), measured side by side in one run.

Both read the same H.264 + AAC source (by default 60 s of 1280x720 at 30 fps, made here with the FFmpeg CLI;
`--scene` picks a still test pattern or a hand-held-like one, see `scene_filter`) and write H.264 (libx264, same preset and CRF, yuv420p) + AAC at the same bitrate; both decode and encode with
FFmpeg's own threads. The rounds alternate (transcode, render, transcode, ...) so that load from other processes
falls on both alike; the medians are compared. A third render holds the first window's map still for the whole
clip: the difference to the real render is what the encoder pays for coding a map that changes every frame. The
sweep that gives the render its windows (decoding every window and running the model, stride 0.5 s by default)
is timed once and reported beside it, with the end-to-end ratio (sweep + render) / transcode.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from fnac import render

SCENES = ("pattern", "handheld")


def scene_filter(scene: str, width: int, height: int, fps: int) -> str:
    """The FFmpeg lavfi source of a bench clip's picture.

    pattern: `testsrc2`, whose background stands still, so that x264 codes most of the picture as skipped
    blocks; an overlay whose map moves takes that away, so this is the worst case for the render. handheld: the
    same pattern, bigger by an eighth, cropped by a window that pans and bobs as a hand-held phone does, with
    temporal noise as a phone's sensor adds: every block changes in every frame, as in the footage users bring.
    """
    if scene == "pattern":
        return f"testsrc2=size={width}x{height}:rate={fps}"
    if scene == "handheld":
        big_w, big_h = (width * 9 // 8) // 2 * 2, (height * 9 // 8) // 2 * 2
        dx, dy = (big_w - width) // 2, (big_h - height) // 2
        return (
            f"testsrc2=size={big_w}x{big_h}:rate={fps},"
            f"crop={width}:{height}:x='{dx}+{dx}*sin(t/3)':y='{dy}+{dy}*sin(t/2)',"
            "noise=alls=8:allf=t"
        )
    raise ValueError(f"unknown scene {scene!r}; one of {', '.join(SCENES)}")


def make_source(
    path: Path, *, seconds: float, width: int, height: int, fps: int, scene: str = "pattern"
) -> None:
    """A test clip with the FFmpeg CLI: the `scene`'s picture, and a tone that pauses for 3 s in every 8 (so the
    render has both sounding and not-sounding stretches)."""
    ffmpeg = _ffmpeg()
    tone = "0.4*sin(2*PI*440*t)*gte(mod(t\\,8)\\,3)"
    picture = scene_filter(scene, width, height, fps)
    subprocess.run(
        [
            *(ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", picture),
            *("-f", "lavfi", "-i", f"aevalsrc={tone}|{tone}:s=44100", "-t", f"{seconds:g}"),
            *render.VideoEncoding().ffmpeg_args(),
            str(path),
        ],
        check=True,
    )


def _ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found is None:
        raise SystemExit(
            "fnac bench render needs the ffmpeg CLI: run scripts/system_deps.sh (apt-get install ffmpeg)"
        )
    return found


def time_transcode(source: Path, out: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of `ffmpeg -i source <same settings> out`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [_ffmpeg(), "-v", "error", "-y", "-i", str(source), *render.VideoEncoding().ffmpeg_args(), str(out)],
        check=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def time_render(source: Path, windows, out: Path, threshold: float) -> tuple[float, float]:
    """(wall, CPU) seconds of `render.render_video` (this process: decoding, painting and encoding threads)."""
    cpu, started = time.process_time(), time.perf_counter()
    render.render_video(source, windows, out, threshold=threshold)
    return time.perf_counter() - started, time.process_time() - cpu


def main(args) -> int:
    from fnac import Localizer

    seconds, fps = args.seconds, args.fps
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="fnac-bench-render-") as folder:
        folder = Path(folder)
        source = folder / "source.mp4"
        scene = getattr(args, "scene", "pattern")
        print(f"making a {seconds:g} s {width}x{height} {fps} fps H.264 + AAC clip ({scene}) ...", flush=True)
        make_source(source, seconds=seconds, width=width, height=height, fps=fps, scene=scene)

        localizer = Localizer(args.model)
        cpu, started = time.process_time(), time.perf_counter()
        sweep = localizer.localize(video=source, stride=args.stride)
        sweep_wall, sweep_cpu = time.perf_counter() - started, time.process_time() - cpu
        windows = sweep.windows
        threshold = localizer.sounding_threshold

        # The same render with the first window's map held still: what the encoder pays for a map that moves.
        still = [
            render.Window(w.time, windows[0].heatmap, windows[0].score, windows[0].sounding, windows[0].boxes)
            for w in windows
        ]
        transcodes, renders, stills = [], [], []
        for round_ in range(args.rounds):
            transcodes.append(time_transcode(source, folder / "transcode.mp4"))
            renders.append(time_render(source, windows, folder / "overlay.mp4", threshold))
            stills.append(time_render(source, still, folder / "still.mp4", threshold))
            print(
                f"round {round_ + 1}/{args.rounds}: transcode {transcodes[-1][0]:.1f} s, "
                f"render {renders[-1][0]:.1f} s, render with a still map {stills[-1][0]:.1f} s",
                flush=True,
            )
        sizes = {
            name: (folder / name).stat().st_size for name in ("transcode.mp4", "overlay.mp4", "still.mp4")
        }

    transcode_wall = statistics.median(t[0] for t in transcodes)
    transcode_cpu = statistics.median(t[1] for t in transcodes)
    render_wall = statistics.median(r[0] for r in renders)
    render_cpu = statistics.median(r[1] for r in renders)
    still_wall = statistics.median(r[0] for r in stills)
    still_cpu = statistics.median(r[1] for r in stills)
    result = {
        "clip": {
            "seconds": seconds,
            "width": width,
            "height": height,
            "fps": fps,
            "stride": args.stride,
            "scene": scene,
        },
        "encoding": render.VideoEncoding().ffmpeg_args(),
        "windows": len(windows),
        "rounds": args.rounds,
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "transcode_s": round(transcode_wall, 3),
        "transcode_cpu_s": round(transcode_cpu, 3),
        "render_s": round(render_wall, 3),
        "render_cpu_s": round(render_cpu, 3),
        "render_over_transcode": round(render_wall / transcode_wall, 3),
        "render_over_transcode_cpu": round(render_cpu / transcode_cpu, 3),
        "still_map_render_s": round(still_wall, 3),
        "still_map_render_cpu_s": round(still_cpu, 3),
        "sweep_s": round(sweep_wall, 3),
        "sweep_cpu_s": round(sweep_cpu, 3),
        "end_to_end_over_transcode": round((sweep_wall + render_wall) / transcode_wall, 3),
        "output_bytes": sizes,
    }
    print()
    print(
        f"{seconds:g} s {width}x{height} {fps} fps {scene} clip, {len(windows)} windows (stride {args.stride:g} s), "
        f"median of {args.rounds} alternating rounds on {result['cpu']} ({result['cores']} cores)"
    )
    print(f"  {'':34} {'wall s':>8} {'CPU s':>8}")
    print(f"  {'ffmpeg CLI transcode':34} {transcode_wall:8.2f} {transcode_cpu:8.2f}")
    print(f"  {'fnac render (overlay MP4)':34} {render_wall:8.2f} {render_cpu:8.2f}")
    print(
        f"  {'  ratio render / transcode':34} {render_wall / transcode_wall:8.2f} {render_cpu / transcode_cpu:8.2f}"
    )
    print(f"  {'fnac render, map held still':34} {still_wall:8.2f} {still_cpu:8.2f}")
    print(
        f"  {'  ratio still / transcode':34} {still_wall / transcode_wall:8.2f} {still_cpu / transcode_cpu:8.2f}"
    )
    print(f"  {'sweep (decode windows + model)':34} {sweep_wall:8.2f} {sweep_cpu:8.2f}")
    print(f"  {'  ratio (sweep + render) / transcode':34} {(sweep_wall + render_wall) / transcode_wall:8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"
