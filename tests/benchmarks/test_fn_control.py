"""`python -m benchmarks.fn_control` at toy size, and its statistics."""

import argparse
import json
import math

import pytest

from benchmarks import fn_control


def test_fn_control_branches_both_arms_from_one_warmup_and_writes_the_table(tmp_path):
    out = tmp_path / "fnc"
    argv = ["-o", str(out), "--rates", "0.5", "--seeds", "0", "--classes", "5", "--distractors", "1", "2", "--train", "24", "--val", "8",
            "--test", "8", "--data-image-size", "64", "--image-size", "64", "--width", "8", "--dim", "16",
            "--warmup-epochs", "1", "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--parallel", "1",
            "--synth-workers", "1", "--probe-batches", "1"]  # fmt: skip
    assert fn_control.main(argv) == 0
    report = json.loads((out / "fn_control.json").read_text())
    assert {r["name"] for r in report["runs"]} == {"r0.5_fnac_s0", "r0.5_contrastive_s0"}
    warmup = str(out / "runs" / "warmup" / "best.pt")
    for run in report["runs"]:
        rows = [
            json.loads(line)
            for line in (out / "runs" / run["name"] / "metrics.jsonl").read_text().splitlines()
        ]
        assert len(rows) == 1 and rows[0]["fn_rate_target"] == pytest.approx(0.5)
        assert run["train_fn_rate"] == rows[0]["fn_rate"] and abs(run["train_fn_rate"] - 0.5) < 0.1
        assert run["n"] == 8 and 0 <= run["ap50"] <= 1
        assert 0 <= run["probe"]["audio_r_precision"] <= 1 and 0 <= run["probe"]["image_r_precision"] <= 1
        log = (out / "runs" / f"{run['name']}.log").read_text()
        assert "initialised from " + warmup in log
        assert rows[0]["phase"] == ("contrastive" if run["arm"] == "contrastive" else "fnac")
    paired = report["paired"]["r0.5"]
    by_arm = {r["arm"]: r for r in report["runs"]}
    assert paired["ap50"]["by_seed"] == [by_arm["fnac"]["ap50"] - by_arm["contrastive"]["ap50"]]
    table = (out / "fn_control.md").read_text()
    assert "| 0.5 |" in table and "centre_gaussian" in table


def test_standard_errors_and_paired_differences_by_seed():
    assert fn_control.mean_se([1.0, 2.0, 3.0]) == {"mean": 2.0, "se": pytest.approx(1 / math.sqrt(3)), "n": 3}
    assert math.isnan(fn_control.mean_se([0.5])["se"])
    args = argparse.Namespace(rates=[0.1], seeds=[0, 1, 2])
    probe = dict.fromkeys(fn_control.PROBE_KEYS, 0.5)
    runs = [
        {"rate": 0.1, "arm": arm, "seed": seed, "ap50": ap50, "mean_ciou": 0.4, "auc": 0.4, "train_fn_rate": 0.1,
         "probe": probe, "best_epoch": 1, "wall_seconds": 1.0}
        for arm, seed, ap50 in [("fnac", 0, 0.50), ("contrastive", 0, 0.40), ("fnac", 1, 0.30),
                                ("contrastive", 1, 0.35), ("contrastive", 2, 0.20)]
    ]  # fmt: skip
    report = fn_control.summarize(args, runs, start={}, priors={})
    paired = report["paired"]["r0.1"]
    assert paired["seeds"] == [0, 1]  # seed 2 has only one arm
    assert paired["ap50"]["by_seed"] == pytest.approx([0.10, -0.05])
    assert paired["ap50"]["mean"] == pytest.approx(0.025) and paired["ap50"]["se"] == pytest.approx(0.075)
    assert report["groups"]["r0.1_contrastive"]["ap50"]["n"] == 3
