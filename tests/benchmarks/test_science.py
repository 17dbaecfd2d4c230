"""`python -m benchmarks.science` at toy size: datasets, every method's runs, the probe and the table."""

import json

import numpy as np
import torch

from benchmarks import science


def _argv(out, methods):
    return ["-o", str(out), "--classes", "5", "--seeds", "0", "--methods", *methods,
            "--train", "24", "--val", "8", "--test", "8", "--data-image-size", "64", "--image-size", "64",
            "--width", "8", "--dim", "16", "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "8",
            "--device", "cpu", "--synth-workers", "1", "--probe-batches", "1"]  # fmt: skip


def test_science_trains_every_method_and_writes_the_table(tmp_path):
    out = tmp_path / "science"
    assert science.main(_argv(out, ["fnac", "baseline"])) == 0
    report = json.loads((out / "science.json").read_text())
    assert set(report["groups"]) == {"k5_fnac", "k5_baseline"}
    for run in report["runs"]:
        assert run["epochs_done"] == 2 and run["n"] == 8 and 0 <= run["ap50"] <= 1
        probe = run["probe"]
        assert 0 < probe["false_negative_rate"] < 1  # 5 classes, batches of 8: same-class pairs happen
        assert 0 <= probe["audio_r_precision"] <= 1 and 0 <= probe["image_r_precision"] <= 1
        assert (
            probe["loss_contrastive"] > 0 and min(probe[f"loss_{t}_weighted"] for t in ("fns1", "tne")) >= 0
        )
        assert isinstance(run["collapsed"], bool) and len(run["train_contrastive_by_epoch"]) == 2
        pointing = run["pointing"]
        assert pointing["pointing_n"] == 8 and 0 < pointing["pointing_swapped_n"] <= 8
        for key in ("pointing", "pointing_swapped", "pointing_swapped_blind"):
            assert 0 <= pointing[key] <= 1
    # the centre reference, counted here from the annotations the runner never reads for it
    samples = json.loads((out / "data_k5" / "annotations.json").read_text())["samples"]
    boxes = [s["bbox"][0] for s in samples if s["split"] == "test"]
    centre = sum(b[0] <= 0.5 <= b[2] and b[1] <= 0.5 <= b[3] for b in boxes) / len(boxes)
    assert report["runs"][0]["pointing"]["pointing_centre_prior"] == centre
    # FNAC's second epoch is past the warm-up; the baseline never leaves the contrastive phase
    phases = {
        name: [json.loads(line)["phase"] for line in (out / "runs" / name / "metrics.jsonl").open()]
        for name in ("k5_fnac_s0", "k5_baseline_s0")
    }
    assert phases == {"k5_fnac_s0": ["contrastive", "fnac"], "k5_baseline_s0": ["contrastive", "contrastive"]}
    table = (out / "science.md").read_text()
    assert report["groups"]["k5_baseline"]["collapsed_runs"] == 0  # never: its phase is always contrastive
    assert "with 2–4 (the preset's) silent distractors" in table and "| 100·TNE |" in table
    assert "| own audio: peak in sounding box |" in table
    assert "| 5 |" in table and "| fnac |" in table and "| baseline |" in table and "oracle" in table

    # Resumable: adding a method trains only the new runs; the finished ones are kept as they are.
    finished = (out / "runs" / "k5_fnac_s0" / "best.pt").stat().st_mtime_ns
    assert science.main(_argv(out, ["fnac", "baseline", "fnac-nofns2"])) == 0
    assert (out / "runs" / "k5_fnac_s0" / "best.pt").stat().st_mtime_ns == finished
    report = json.loads((out / "science.json").read_text())
    assert set(report["groups"]) == {"k5_fnac", "k5_baseline", "k5_fnac-nofns2"}
    for name, fns2 in (("k5_fnac_s0", 100.0), ("k5_fnac-nofns2_s0", 0.0)):
        checkpoint = torch.load(out / "runs" / name / "last.pt", map_location="cpu", weights_only=True)
        assert checkpoint["train_state"]["options"]["fns2"] == fns2


def test_shared_warmup_branches_every_method_from_one_contrastive_run(tmp_path):
    shared = tmp_path / "shared"
    distractors = ["--distractors", "1", "2"]
    assert science.main([*_argv(shared, ["fnac", "baseline"]), "--shared-warmup", *distractors]) == 0
    runs = shared / "runs"

    def rows(name):
        return [json.loads(line) for line in (runs / name / "metrics.jsonl").open()]

    warmup = rows("k5_warmup_s0")
    assert [row["phase"] for row in warmup] == ["contrastive"]  # --warmup-epochs 1, trained once
    for name, phases in (("k5_fnac_s0", ["contrastive", "fnac"]), ("k5_baseline_s0", ["contrastive"] * 2)):
        history = rows(name)
        assert [row["phase"] for row in history] == phases
        assert history[0]["train_loss"] == warmup[0]["train_loss"]  # the copied warm-up epoch, not a retrain
    report = json.loads((shared / "science.json").read_text())
    assert report["settings"]["shared_warmup"] is True
    table = (shared / "science.md").read_text()
    assert "shared by every method" in table and "with 1–2 silent distractors" in table

    # Branching is exact: the baseline continued from the shared warm-up ends with the weights of a baseline
    # trained in one go with the same seed.
    alone = tmp_path / "alone"
    assert science.main([*_argv(alone, ["baseline"]), *distractors]) == 0
    branched, straight = (
        torch.load(out / "runs/k5_baseline_s0/last.pt", map_location="cpu", weights_only=True)["model"]
        for out in (shared, alone)
    )
    assert branched.keys() == straight.keys()
    for key in branched:
        torch.testing.assert_close(branched[key], straight[key], rtol=0, atol=0, msg=key)


def test_each_method_adds_its_loss_weights_to_the_shared_command(tmp_path):
    options = science.parse_args(_argv(tmp_path, ["fnac"]))
    commands = {
        method: science.train_command(tmp_path / "data", tmp_path / "run", method, 0, options)
        for method in science.METHODS
    }

    def flag(command, name):
        return command[command.index(name) + 1] if name in command else None

    assert "--baseline" in commands["baseline"] and "--baseline" not in commands["fnac"]
    assert flag(commands["fnac"], "--fns1") is None  # the recipe's 100s come from `fnac train`'s defaults
    assert flag(commands["fnac-nofns2"], "--fns2") == "0"
    assert [flag(commands["fnac-lambda1"], name) for name in ("--fns1", "--fns2", "--tne")] == ["1"] * 3
    # batch 8: 100 · 8 / 256, so that 2·w/B, the most a mean-reduced L1 term can add, is the recipe's 2·100/256
    assert [flag(commands["fnac-scaled"], name) for name in ("--fns1", "--fns2", "--tne")] == ["3.125"] * 3
    scaled_nofns2 = [flag(commands["fnac-scaled-nofns2"], name) for name in ("--fns1", "--fns2", "--tne")]
    assert scaled_nofns2 == ["3.125", "0", "3.125"]
    assert all(flag(c, "--warmup-epochs") == "1" and flag(c, "--seed") == "0" for c in commands.values())


def test_peak_point_is_where_the_upsampled_map_is_highest():
    heatmap = np.zeros((4, 4), np.float32)
    heatmap[0, 3] = 5.0  # top-right cell
    x, y = science.peak_point(heatmap)
    assert 0.75 <= x <= 1 and 0 <= y <= 0.25
    assert science._inside((x, y), [0.75, 0.0, 1.0, 0.25]) and not science._inside((x, y), [0, 0, 0.5, 0.5])
    centre = np.zeros((7, 7), np.float32)
    centre[3, 3] = 1.0
    x, y = science.peak_point(centre)  # one of the four middle pixels of the 224 map (a tie)
    assert abs(x - 0.5) < 1 / 224 and abs(y - 0.5) < 1 / 224
