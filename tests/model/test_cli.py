import subprocess
import sys
import time

import torch

from model.export import read_metadata
from tests.model.official_reference import OfficialStyleFNAC, official_checkpoint
from training.cli import main


def test_help_is_fast_and_lists_every_verb():
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "training.cli", "--help"], capture_output=True, text=True, check=True
    )
    elapsed = time.perf_counter() - start
    for verb in ("synth", "prepare", "train", "eval", "export", "import", "score", "serve", "bench"):
        assert verb in out.stdout
    assert elapsed < 5  # generous for a loaded CI box; the point is that torch is not imported
    check = "import sys, training.cli; training.cli.build_parser(); print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", check], capture_output=True, text=True).stdout.strip()
        == "False"
    )


def test_import_then_export(tmp_path, capsys):
    torch.manual_seed(0)
    src = tmp_path / "official.pth"
    torch.save(official_checkpoint(OfficialStyleFNAC()), src)
    assert main(["import", str(src), "-o", str(tmp_path / "m.pt"), "--sample-rate", "22050"]) == 0
    assert main(["export", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.onnx"), "--name", "imported"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "correlation" in out
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["sample_rate"] == "22050" and meta["model_name"] == "imported"


def test_errors_are_one_line_with_status_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "none.pt"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    (tmp_path / "m.pt").write_bytes(b"")
    assert main(["export", str(tmp_path / "m.pt"), "-o", str(tmp_path / "x.onnx"), "--int8"]) == 2
