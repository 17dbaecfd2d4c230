import numpy as np
import pytest
import torch

from model.checkpoint import CheckpointError, import_official, load_model, read_checkpoint, save_checkpoint
from model.config import FNACConfig
from model.fnac import FNAC, FNACLocalizer
from tests.model.official_reference import OfficialStyleFNAC, official_checkpoint, official_preprocess


def test_roundtrip_loads_with_weights_only(tmp_path, tiny_model):
    path = tmp_path / "m.pt"
    save_checkpoint(path, tiny_model, {"training_data": "synthetic", "metrics": {"ap50": 0.5}})
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["width"] == 8 and raw["metadata"]["metrics"]["ap50"] == 0.5
    model, ckpt = load_model(path)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    assert len(ckpt["metadata"]["weights_sha256"]) == 64
    assert not list(tmp_path.glob(".*tmp"))


def test_read_rejects_foreign_files(tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save({"model": {}}, bare)
    with pytest.raises(CheckpointError, match="fnac import"):
        read_checkpoint(bare)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        read_checkpoint(junk)


@pytest.mark.parametrize("ddp", [True, False])
def test_import_official_layout_gives_the_official_heatmap(tmp_path, ddp):
    torch.manual_seed(7)
    official = OfficialStyleFNAC().eval()
    src = tmp_path / "fnac_vggss144k.pth"
    torch.save(official_checkpoint(official, ddp_prefix=ddp), src)
    model, ckpt, notes = import_official(src, sample_rate=16000)
    assert ckpt["config"]["width"] == 64 and ckpt["config"]["dim"] == 512
    assert ckpt["metadata"]["source_epoch"] == 20
    assert any("16000" in n for n in notes)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    t = np.arange(48000) / 16000
    audio = np.stack([0.5 * np.sin(2 * np.pi * 300 * t), 0.3 * rng.uniform(-1, 1, 48000)]).astype(np.float32)
    with torch.no_grad():
        ours, _ = FNACLocalizer(model)(torch.from_numpy(image), torch.from_numpy(audio))
        pairs = [official_preprocess(image[i], audio[i].astype(np.float64), 16000) for i in range(2)]
        theirs = official(torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]))
    span = (theirs.max() - theirs.min()).item()
    assert (ours - theirs).abs().max().item() <= 1e-4 * span


def test_import_names_missing_and_ignores_extra(tmp_path):
    torch.manual_seed(0)
    state = FNAC(FNACConfig(width=8, dim=16)).state_dict()
    del state["aud_proj.weight"]
    state["imgnet.fc.weight"] = torch.zeros(3)
    src = tmp_path / "broken.pth"
    torch.save({"model": state}, src)
    with pytest.raises(CheckpointError, match=r"aud_proj\.weight"):
        import_official(src)
    state["aud_proj.weight"] = torch.zeros(16, 64)
    torch.save(state, src)  # bare state dict this time
    _, _, notes = import_official(src)
    assert any("imgnet.fc.weight" in n for n in notes)


def test_import_refuses_arbitrary_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    src = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": Evil()}, src)
    with pytest.raises(CheckpointError, match="cannot read"):
        import_official(src)


def test_atomic_writes_have_plain_file_permissions(tmp_path, tiny_model, monkeypatch):
    import os

    from model.atomic import atomic_path, remove_stale_temporaries

    old = os.umask(0o022)

    def no_umask_changes(mask):  # the umask is process-wide: changing it races with every other thread
        raise AssertionError("atomic writes must not change the process umask")

    monkeypatch.setattr(os, "umask", no_umask_changes)
    try:
        save_checkpoint(tmp_path / "m.pt", tiny_model)
        # a container user must be able to read a mounted model: not mkstemp's 0600
        assert (tmp_path / "m.pt").stat().st_mode & 0o777 == 0o644
        with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed mid-write")
        assert not (tmp_path / "x.bin").exists() and not list(tmp_path.glob(".x.bin*"))
        # what a SIGKILL mid-write leaves behind is recognised and removed; real files are kept
        (tmp_path / ".last.pt.k3j2.tmp").write_bytes(b"half a checkpoint")
        removed = remove_stale_temporaries(tmp_path)
        assert [p.name for p in removed] == [".last.pt.k3j2.tmp"] and (tmp_path / "m.pt").is_file()
    finally:
        monkeypatch.undo()
        os.umask(old)
