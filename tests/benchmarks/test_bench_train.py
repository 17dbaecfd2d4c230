"""`python -m benchmarks.bench_train` at toy size: every pipeline runs and the ratios are what it reports."""

import json

import pytest

from benchmarks import bench_train


def test_bench_train_times_all_pipelines_and_reports_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--width", "8", "--dim", "32", "--image-size", "64", "--frame-size", "72", "--audio-seconds", "3",
            "--batch-size", "4", "--steps", "1", "--warmup", "1", "--rounds", "1", "--workers", "0",
            "--json", str(out)]  # fmt: skip
    assert bench_train.main(args) == 0
    result = json.loads(out.read_text())
    rates = result["samples_per_s"]
    assert set(rates) == {"ours", "ours cached", "official-style", "ours loader", "official loader"}
    assert all(rate > 0 for rate in rates.values())
    assert result["ratio"] == pytest.approx(rates["ours"] / rates["official-style"])
    assert result["cached_ratio"] == pytest.approx(rates["ours cached"] / rates["official-style"])
    assert result["cache_build_seconds"] > 0
    printed = capsys.readouterr().out
    assert "ours cached" in printed and "ratio ours cached / official-style" in printed
    assert result["config"]["device"] == "cpu" and result["config"]["amp"] == "off"  # no autocast on a CPU


@pytest.mark.skipif(
    bench_train.torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_bench_train_refuses_cuda_without_a_gpu():
    with pytest.raises(SystemExit, match="no CUDA device"):
        bench_train._device("cuda")
    assert bench_train._device("auto").type == "cpu"
