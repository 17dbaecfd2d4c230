import argparse
import json

import torch

from model.checkpoint import atomic_save, make_checkpoint
from model.config import FNACConfig
from model.fnac import FNAC
from training import bench_model


def test_bench_model_times_every_precision_side_by_side(tmp_path, capsys):
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pt"
    atomic_save(make_checkpoint(FNAC(FNACConfig(width=8, dim=32, image_size=64)).eval()), checkpoint)
    args = argparse.Namespace(
        checkpoint=str(checkpoint),
        calib_data=None,
        threads=1,
        repeats=2,
        provider="cpu",
        batches="1,2",
        precisions="fp32,fp16,int8",
        no_eager=False,
        ogl=False,
        ogl_weights=None,
        json=str(tmp_path / "bench.json"),
    )
    assert bench_model.main(args) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    runners = {(row["batch"], row["runner"]) for row in report["rows"]}
    for batch in (1, 2):
        for runner in ("eager torch + scipy", "onnx fp32", "onnx fp16", "onnx int8"):
            assert (batch, runner) in runners
    assert set(report["loaded_providers"].values()) == {"CPUExecutionProvider"}
    assert report["correlation_vs_reference"]["onnx fp16"] > 0.99
    assert report["export_parity"]["onnx fp16"]["relative_diff"] < 1e-2
    assert "CPU:" in capsys.readouterr().out
