"""`fnac bench render` at tiny scale: the machinery runs and reports both sides (no timing asserts)."""

import json

from fnac.cli import main


def test_bench_render_reports_transcode_and_render_side_by_side(tiny_onnx_model, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "render", "--model", str(tiny_onnx_model), "--seconds", "4", "--size", "160x96"]
    assert main([*argv, "--fps", "10", "--rounds", "1", "--json", str(out)]) == 0

    result = json.loads(out.read_text())
    assert result["clip"] == {"seconds": 4.0, "width": 160, "height": 96, "fps": 10, "stride": 0.5}
    assert result["windows"] == 3  # 1.5, 2.0, 2.5 in a 4 s clip with 3 s windows
    for key in ("transcode", "render", "still_map_render", "sweep"):
        assert result[f"{key}_s"] > 0 and result[f"{key}_cpu_s"] > 0
    ratio = result["render_s"] / result["transcode_s"]  # both rounded to the millisecond
    assert abs(result["render_over_transcode"] - ratio) <= 0.05 * ratio + 0.01
    assert "-preset" in result["encoding"] and "libx264" in result["encoding"]
    assert set(result["output_bytes"]) == {"transcode.mp4", "overlay.mp4", "still.mp4"}
    table = capsys.readouterr().out
    assert "ffmpeg CLI transcode" in table and "ratio render / transcode" in table
