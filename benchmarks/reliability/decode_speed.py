"""The `decode-speed` part: a frame and its 3 s audio window from a 10 s 720p H.264/AAC clip, fnac.media
against the ffmpeg CLI."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from benchmarks import malformed


def run_decode_speed(args, work: Path) -> int:
    """Frame at 5 s + the 3 s audio window around it from a 10 s 720p H.264/AAC clip: fnac.media.decode_clip
    on the uploaded bytes vs the ffmpeg CLI in a subprocess doing the same extraction, interleaved."""
    from fnac import media

    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        print("ffmpeg CLI not found (scripts/system_deps.sh installs it)")
        return 2
    version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    import av

    print(
        f"{version}; PyAV {av.__version__} (FFmpeg {av.library_versions.get('libavcodec')} libavcodec); "
        f"{os.cpu_count()} CPUs (shared); {args.repeats} interleaved repeats, medians"
    )
    failed = False
    for gop_s in args.gop:
        clip = malformed.encode_clip(
            10.0, size=(1280, 720), fps=25, gop=round(25 * gop_s), audio_rate=44100, textured=True
        )
        path = work / f"clip-gop{gop_s:g}.mp4"
        path.write_bytes(clip)
        rgb, pcm = work / "frame.rgb", work / "audio.f32"
        command = [
            ffmpeg,
            "-v",
            "error",
            "-nostdin",
            "-y",
            "-ss",
            "5",
            "-i",
            str(path),
            "-ss",
            "3.5",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            str(rgb),
            "-map",
            "1:a:0",
            "-t",
            "3",
            "-ac",
            "1",
            "-ar",
            "16000",
            "-f",
            "f32le",
            str(pcm),
        ]
        ours, theirs = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            window = media.decode_clip(clip, clip_seconds=3.0, sample_rate=16000, name="clip.mp4")
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run(command, check=True)
            theirs.append(time.perf_counter() - started)
        frame = np.fromfile(rgb, np.uint8).reshape(720, 1280, 3)
        audio = np.fromfile(pcm, np.float32)
        n = min(audio.size, window.audio.size)
        correlation = float(np.corrcoef(audio[:n], window.audio[:n])[0, 1])
        ratio = statistics.median(ours) / statistics.median(theirs)
        failed |= ratio > 0.5
        print(
            f"10 s 1280x720 25 fps H.264 (keyframe every {gop_s:g} s) + 44.1 kHz AAC, {len(clip) / 1e6:.1f} MB: "
            f"fnac.media {statistics.median(ours) * 1000:.0f} ms, ffmpeg CLI {statistics.median(theirs) * 1000:.0f} ms, "
            f"ratio {ratio:.2f}x (target <= 0.5x); same output: frame mean |diff| "
            f"{np.abs(frame.astype(int) - window.frame.astype(int)).mean():.2f} / 255, audio {window.audio.size} "
            f"vs {audio.size} samples, correlation {correlation:.4f}"
        )
    return 1 if failed else 0
