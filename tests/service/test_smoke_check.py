"""docker/smoke.sh's HTTP checks (docker/smoke_check.py), run here against the bundled model on loopback, so a
change that breaks them fails `make test` and not only the Docker run in CI."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.config import DEFAULT_MODEL
from tests.service.conftest import make_clip, tone
from training.live_server import live_server

CHECK = Path(__file__).resolve().parents[2] / "docker" / "smoke_check.py"


def _clip(amplitude: float) -> bytes:
    frame = np.full((240, 320, 3), 20, np.uint8)
    frame[60:180, 180:300] = (230, 200, 40)
    return make_clip([frame] * 40, tone(4.0, 44100, amplitude))


def test_smoke_checks_pass_on_the_bundled_model(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(_clip(0.4))
    (tmp_path / "silent.mp4").write_bytes(_clip(0.0))
    with live_server(DEFAULT_MODEL, tmp_path / "server.log", {"FNAC_DECODE_WORKERS": "1"}) as server:
        port = server.base.rsplit(":", 1)[1]
        result = subprocess.run(
            [sys.executable, str(CHECK), port, str(tmp_path / "clip.mp4"), str(tmp_path / "silent.mp4")],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "localize: 200" in result.stdout and "silent clip: sounding False" in result.stdout


def test_smoke_checks_catch_wrong_values():
    spec = importlib.util.spec_from_file_location("smoke_check", CHECK)
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    model = {"tau": 0.03, "sounding_threshold": 0.5, "heatmap_size": 2}
    good = {
        "heatmap": {"shape": [2, 2], "values": [[10.0, 20.0], [5.0, 1.0]]},
        "score": 0.6,
        "sounding": True,
        "audio_level_dbfs": -10.0,
        "boxes": [{"x0": 160, "y0": 0, "x1": 320, "y1": 120}],
        "width": 320,
        "height": 240,
    }
    smoke.check_answer(good, model, "good")
    for wrong in (
        {"sounding": False},  # against the threshold in use
        {"score": 0.3},  # not the heatmap's peak x tau
        {"boxes": []},  # sounding without a box
        {"boxes": [{"x0": 0, "y0": 0, "x1": 400, "y1": 10}]},  # outside the frame
        {"audio_level_dbfs": -70.0},  # silence cannot be sounding
    ):
        with pytest.raises(SystemExit):
            smoke.check_answer({**good, **wrong}, model, "wrong")
