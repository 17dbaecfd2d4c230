"""`fnac bench render` at tiny scale: the machinery runs and reports both sides (no timing asserts)."""

import itertools
import json

import av
import numpy as np
import pytest

from fnac.cli import main
from training.bench_render import make_source


def test_bench_render_reports_transcode_and_render_side_by_side(tiny_onnx_model, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "render", "--model", str(tiny_onnx_model), "--seconds", "4", "--size", "160x96"]
    assert main([*argv, "--fps", "10", "--rounds", "1", "--scene", "handheld", "--json", str(out)]) == 0

    result = json.loads(out.read_text())
    clip = {"seconds": 4.0, "width": 160, "height": 96, "fps": 10, "stride": 0.5, "scene": "handheld"}
    assert result["clip"] == clip
    assert result["windows"] == 3  # 1.5, 2.0, 2.5 in a 4 s clip with 3 s windows
    for key in ("transcode", "render", "still_map_render", "sweep"):
        assert result[f"{key}_s"] > 0 and result[f"{key}_cpu_s"] > 0
    ratio = result["render_s"] / result["transcode_s"]  # both rounded to the millisecond
    assert abs(result["render_over_transcode"] - ratio) <= 0.05 * ratio + 0.01
    assert "-preset" in result["encoding"] and "libx264" in result["encoding"]
    assert set(result["output_bytes"]) == {"transcode.mp4", "overlay.mp4", "still.mp4"}
    table = capsys.readouterr().out
    assert "ffmpeg CLI transcode" in table and "ratio render / transcode" in table


@pytest.mark.parametrize("scene", ["pattern", "handheld"])
def test_bench_scenes_are_what_they_claim(scene, tmp_path):
    """pattern keeps most of the picture still from frame to frame; handheld changes every part of it."""
    path = tmp_path / f"{scene}.mp4"
    make_source(path, seconds=1.0, width=320, height=180, fps=10, scene=scene)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="gray").astype(int) for f in container.decode(video=0)]
    assert len(frames) == 10 and frames[0].shape == (180, 320)
    # The share of 16 x 16 blocks that change by more than coding noise between consecutive frames.
    changed = []
    for a, b in itertools.pairwise(frames):
        blocks = np.abs(a - b)[:176, :320].reshape(11, 16, 20, 16).mean(axis=(1, 3))
        changed.append((blocks > 1.0).mean())
    if scene == "pattern":
        assert np.mean(changed) < 0.5
    else:
        assert min(changed) > 0.8
