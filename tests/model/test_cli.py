import torch

from fnac.cli import main
from model.export import read_metadata
from tests.model.official_reference import OfficialStyleFNAC, official_checkpoint


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
