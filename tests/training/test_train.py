"""`fnac train`: a short run, kill-and-resume, and a 2-process torchrun run whose loss sees the global batch."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.config import FNACConfig
from model.losses import LossWeights
from training.train import train
from training.train_options import TrainOptions
from training.train_report import collapse_warning, small_batch_warning

CONFIG = FNACConfig(width=8, dim=32, image_size=64, clip_seconds=1.0)
ROOT = Path(__file__).resolve().parents[2]
TINY_ARGS = ["--width", "8", "--dim", "32", "--image-size", "64", "--clip-seconds", "1", "--workers", "0"]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    from training.synth import make_synth

    root = tmp_path_factory.mktemp("synth")
    make_synth(root, n_classes=4, n_train=32, n_val=8, n_test=8, image_size=64, clip_seconds=1.0,
               distractors=(0, 1), negatives=False)  # fmt: skip
    return root


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def test_short_run_learns_and_writes_checkpoints_metrics_and_curve(synth_dir, tmp_path):
    from model.checkpoint import load_model, read_checkpoint

    run = tmp_path / "run"
    options = TrainOptions(epochs=4, batch_size=8, warmup_epochs=2, lr=1e-3, workers=0, progress=False)
    summary = train(CONFIG, synth_dir, run, options)

    rows = _rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["phase"] for r in rows] == ["contrastive", "contrastive", "fnac", "fnac"]
    assert "train_fns1" in rows[2] and "train_tne" in rows[2] and "train_fns1" not in rows[0]
    # the contrastive part falls from chance level (2·ln 8 ≈ 4.16) as the pairs are learned
    assert rows[-1]["train_contrastive"] < rows[0]["train_contrastive"]
    assert all(r["global_batch"] == 8 and r["samples_per_s"] > 0 and r["wall_seconds"] > 0 for r in rows)
    assert all(r["contrastive_chance"] == pytest.approx(2 * math.log(8)) for r in rows)
    # selection on the validation split, with the official protocol (val has boxes)
    assert all(0 <= r["val_ap50"] <= 1 and r["val_samples"] == 8 for r in rows)
    assert "val AP50" in rows[-1]["selection"] and summary["best_epoch"] == rows[-1]["best_epoch"]
    assert (run / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    model, ckpt = load_model(run / "best.pt")  # weights_only loading
    assert model.config == CONFIG and ckpt["epoch"] == summary["best_epoch"]
    last = read_checkpoint(run / "last.pt")
    assert last["epoch"] == 4 and last["optimizer"]["state"] and last["train_state"]["rng"]
    assert last["train_state"]["data"]["train_samples"] == 32
    assert "32 train samples" in last["metadata"]["training_data"]
    with pytest.raises(FileExistsError):  # never clobber a run silently
        train(CONFIG, synth_dir, run, options)


def test_sigkill_mid_run_then_resume_continues_the_epochs(synth_dir, tmp_path):
    from model.checkpoint import load_model, read_checkpoint
    from training.train import main

    run = tmp_path / "run"
    args = [
        "--data",
        str(synth_dir),
        "-o",
        str(run),
        "--epochs",
        "4",
        "--batch-size",
        "8",
        "--warmup-epochs",
        "1",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.train", *args, *TINY_ARGS, "--no-progress"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (run / "last.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint after 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = read_checkpoint(run / "last.pt")["epoch"]
    assert 1 <= killed_at < 4

    assert main([*args, *TINY_ARGS, "--no-progress", "--resume"]) == 0
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]  # nothing lost, nothing repeated
    model, ckpt = load_model(run / "last.pt")
    assert ckpt["epoch"] == 4 and model.config == CONFIG
    assert read_checkpoint(run / "best.pt")["epoch"] == rows[-1]["best_epoch"]


DIST_SCRIPT = r"""
import json, os, sys
import torch
from torch.nn.parallel import DistributedDataParallel
from model.config import FNACConfig
from model.fnac import FNAC
from model.losses import fnac_loss
from training import distributed as D
from training.train import train
from training.train_options import TrainOptions

out, data = sys.argv[1], sys.argv[2]
dist = D.setup("cpu")
config = FNACConfig(width=8, dim=32, image_size=64, clip_seconds=1.0)
torch.manual_seed(0)
model = FNAC(config).eval()  # eval: BatchNorm and dropout do not depend on the split of the batch
generator = torch.Generator().manual_seed(1)
image = torch.randint(0, 256, (8, 64, 64, 3), dtype=torch.uint8, generator=generator)
audio = torch.rand(8, 16000, generator=generator) * 2 - 1
rows = slice(0, 3) if dist.rank == 0 else slice(3, 8)  # unequal shares (as after decode failures): padded
ddp = DistributedDataParallel(model)
v, a = ddp(image[rows], audio[rows])
sizes = D.gather_sizes(v.shape[0], dist.device)
v, a = D.all_gather_with_grad(v, sizes), D.all_gather_with_grad(a, sizes)
loss, parts = fnac_loss(v, a, config.tau, epoch=10)
loss.backward()
if dist.rank == 0:
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    torch.save({"loss": loss.detach(), "global": a.shape[0], "grads": grads}, os.path.join(out, "dist.pt"))
train(config, data, os.path.join(out, "run"),
      TrainOptions(epochs=2, batch_size=8, warmup_epochs=1, workers=0, progress=False, device="cpu"))
# batches of 2 classes, through the decode cache's loader
train(config, data, os.path.join(out, "run_classes"),
      TrainOptions(epochs=1, batch_size=8, baseline=True, classes_per_batch=2, cache=True, workers=0,
                   progress=False, device="cpu"))
D.teardown()
"""


def test_torchrun_two_processes_gather_the_global_batch(synth_dir, tmp_path):
    from model.fnac import FNAC
    from model.losses import fnac_loss

    script = tmp_path / "dist_check.py"
    script.write_text(DIST_SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path), str(synth_dir)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    # the same step in one process on the concatenated batch: same loss, same gradients
    torch.manual_seed(0)
    model = FNAC(CONFIG).eval()
    generator = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (8, 64, 64, 3), dtype=torch.uint8, generator=generator)
    audio = torch.rand(8, 16000, generator=generator) * 2 - 1
    v, a = model(image, audio)
    loss, _ = fnac_loss(v, a, CONFIG.tau, epoch=10)
    loss.backward()
    distributed = torch.load(tmp_path / "dist.pt", weights_only=True)
    assert distributed["global"] == 8
    torch.testing.assert_close(distributed["loss"], loss.detach(), rtol=1e-5, atol=1e-5)
    for name, param in model.named_parameters():  # float summation order differs: compare norms
        error = (distributed["grads"][name] - param.grad).norm() / param.grad.norm()
        assert error < 1e-4, f"{name}: relative gradient error {error:.2e}"

    rows = _rows(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["world_size"] == 2 and r["global_batch"] == 8 for r in rows)  # 4 per rank, 8 in the loss
    assert rows[0]["steps"] == 32 // 8 and rows[0]["val_samples"] == 8  # validation sharded, then gathered
    assert not (tmp_path / "run" / "rank1").exists()
    # 2 classes per global batch of 8 (4 + 4 clips, each rank 2 + 2): 24 of its 56 pairs same-class
    rows = _rows(tmp_path / "run_classes")
    assert rows[0]["world_size"] == 2 and rows[0]["classes_per_batch"] == 2
    assert rows[0]["fn_rate"] == pytest.approx(24 / 56) and rows[0]["fn_rate_target"] == pytest.approx(
        24 / 56
    )


def test_classes_per_batch_sets_and_reports_the_measured_false_negative_rate(synth_dir, tmp_path):
    from training.sampler import expected_rate

    options = dict(epochs=1, batch_size=8, baseline=True, workers=0, progress=False)
    train(CONFIG, synth_dir, tmp_path / "plain", TrainOptions(**options))
    assert "fn_rate" not in _rows(tmp_path / "plain")[0]  # the ordinary shuffle knows no classes
    train(CONFIG, synth_dir, tmp_path / "rate", TrainOptions(fn_rate=0.3, **options))
    row = _rows(tmp_path / "rate")[0]
    # 4 classes, batch 8: 0.3 lies between 2 classes per batch (4 + 4 clips: 24 of 56 pairs) and 3 (3 + 3 + 2:
    # 14 of 56); 72 % of batches from 3 classes make 0.3, and the epoch's 4 batches hold 3 of them
    assert row["classes_per_batch"] == 2 and row["more_classes_share"] == pytest.approx(0.72)
    assert row["fn_rate_target"] == pytest.approx(0.3)
    assert row["fn_rate"] == pytest.approx((24 + 3 * 14) / (4 * 56))
    assert row["steps"] == 32 // 8 and expected_rate(8, 3) == pytest.approx(14 / 56)
    with pytest.raises(Exception, match="the training set has 4 classes"):
        train(CONFIG, synth_dir, tmp_path / "many", TrainOptions(classes_per_batch=5, **options))


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(synth_dir, tmp_path):
    from model.checkpoint import read_checkpoint

    common = {"batch_size": 8, "warmup_epochs": 1, "workers": 1, "progress": False, "max_samples": 16}
    train(CONFIG, synth_dir, tmp_path / "straight", TrainOptions(epochs=2, **common))
    train(CONFIG, synth_dir, tmp_path / "split", TrainOptions(epochs=1, **common))
    train(CONFIG, synth_dir, tmp_path / "split", TrainOptions(epochs=2, resume=True, **common))
    straight = read_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = read_checkpoint(tmp_path / "split" / "last.pt")
    assert resumed["epoch"] == 2
    # same shuffles (loader worker seeds included), crops, flips, masks and dropout after the restart: the weights are identical
    assert all(torch.equal(straight["model"][k], resumed["model"][k]) for k in straight["model"])


def test_narrow_network_at_full_resolution_trains_without_crashing():
    # torch 2.14's CPU conv backward crashed (double free) on the channels-last view of the uint8 image for
    # width ≤ 8 at 224 px; run in a subprocess so a regression fails this test instead of killing pytest.
    code = (
        "import torch\n"
        "from model.config import FNACConfig\nfrom model.fnac import FNAC\nfrom model.losses import fnac_loss\n"
        "from training.train_forward import SpecAugment, TrainForward\n"
        "fnac = FNAC(FNACConfig(width=8, dim=32, image_size=224, clip_seconds=1.0)).train()\n"
        "v, a = TrainForward(fnac, SpecAugment(), None)(torch.zeros(2, 224, 224, 3, dtype=torch.uint8), "
        "torch.rand(2, 16000) - 0.5)\n"
        "fnac_loss(v, a, fnac.tau, epoch=10)[0].backward()\nprint('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_init_from_starts_from_the_checkpoint_weights_and_its_network_shape(synth_dir, tmp_path):
    from model.checkpoint import read_checkpoint

    options = dict(epochs=1, batch_size=8, warmup_epochs=0, workers=0, progress=False, baseline=True)
    train(CONFIG, synth_dir, tmp_path / "a", TrainOptions(lr=1e-3, **options))
    first = read_checkpoint(tmp_path / "a" / "last.pt")
    # another network shape on the command line: the checkpoint's wins; lr 0 leaves the weights where they start
    other = FNACConfig(width=16, dim=32, image_size=64, clip_seconds=1.0)
    init = str(tmp_path / "a" / "last.pt")
    train(other, synth_dir, tmp_path / "b", TrainOptions(lr=0.0, weight_decay=0.0, init_from=init, **options))
    second = read_checkpoint(tmp_path / "b" / "last.pt")
    assert second["config"] == first["config"]
    assert second["metadata"]["initialized_from"] == init
    convs = [k for k in first["model"] if k.endswith("conv1.weight") or k.endswith("proj.weight")]
    assert convs and all(torch.equal(first["model"][k], second["model"][k]) for k in convs)
    with pytest.raises(Exception, match="not found"):
        train(
            CONFIG, synth_dir, tmp_path / "c", TrainOptions(init_from=str(tmp_path / "missing.pt"), **options)
        )


def test_collapse_warning_only_for_fnac_epochs_at_chance():
    # the numbers of a real from-scratch run (batch 32) whose FNAC terms started while it was still at chance
    chance = 2 * math.log(32)
    collapsed = {"phase": "fnac", "train_contrastive": 6.9315, "contrastive_chance": chance}
    message = collapse_warning(collapsed)
    assert "collapsed" in message and "--warmup-epochs" in message and "100*batch/256" in message
    assert collapse_warning({**collapsed, "train_contrastive": 6.3685}) is None  # learning: no warning
    assert collapse_warning({**collapsed, "phase": "contrastive"}) is None  # warm-up at chance is normal
    assert collapse_warning({"phase": "fnac", "train_contrastive": 6.9315}) is None  # older metrics rows


def test_small_batch_warning_names_the_weights_that_match_the_recipe():
    warning = small_batch_warning(LossWeights(), 32)
    assert "8x harder" in warning and "--fns1 12.5 --fns2 12.5 --tne 12.5" in warning
    assert small_batch_warning(LossWeights(), 256) is None  # the official scripts
    assert small_batch_warning(LossWeights(), 128) is None  # the official code's default batch
    assert "4x harder" in small_batch_warning(LossWeights(), 64)
    assert small_batch_warning(LossWeights(fns1=12.5, fns2=12.5, tne=12.5), 32) is None
    assert small_batch_warning(LossWeights(fns2=0, tne=0, fns1=60), 64) is not None  # any term above 2 × 25
    # the baseline has no such terms
    assert small_batch_warning(LossWeights(contrastive_only=True), 8) is None
