"""`fnac train` SIGKILLed at random points, one of them aimed at a checkpoint write, and resumed each time:
every checkpoint left behind loads, no epoch the run reported done is lost, and the finished run equals an
uninterrupted one (training is seeded; resume restores every RNG). tests/training/test_train.py has the single
kill-after-a-checkpoint case; `python -m benchmarks.reliability kill-train` runs many more, torchrun included."""

from __future__ import annotations

import random
import subprocess
import time

import pytest

from benchmarks.reliability import kill_train

EPOCHS = 8


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return kill_train.make_tiny_synth(tmp_path_factory.mktemp("synth"))


def test_random_sigkills_then_resume_lose_nothing_and_match_an_uninterrupted_run(synth, tmp_path):
    reference = tmp_path / "reference"
    started = time.monotonic()
    subprocess.run(
        kill_train.train_command(synth, reference, EPOCHS),
        cwd=kill_train.ROOT,
        env=kill_train.train_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    # Aim every kill well inside the time an uninterrupted run takes on this machine (later runs start faster,
    # with warm caches), so the first one always lands before the run ends; a fixed 6 s bound lost that race.
    run_seconds = time.monotonic() - started

    seed = random.randrange(2**32)
    kills = kill_train.kill_and_resume(
        synth,
        tmp_path / "killed",
        epochs=EPOCHS,
        kills=3,
        nproc=1,
        rng=random.Random(seed),
        max_delay_s=max(1.0, 0.35 * run_seconds),
        log_dir=tmp_path,
    )
    report = "\n".join([f"seed {seed}", *(kill.line() for kill in kills)])
    assert kills, report  # the first kill lands before the run ends
    assert not kill_train.kill_violations(kills), report

    comparison = kill_train.compare_runs(reference, tmp_path / "killed")
    assert comparison["epochs"] == list(range(1, EPOCHS + 1)), report  # nothing repeated, nothing missing
    assert comparison["weights_identical"], (comparison, report)
    assert comparison["max_metric_diff"] == 0.0, (comparison, report)
    # the final --resume cleared what killed checkpoint writes had left behind
    assert not list((tmp_path / "killed").glob(".*.tmp")), report
