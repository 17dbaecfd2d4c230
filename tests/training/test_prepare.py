"""`fnac prepare`: videos → frames/<id>.jpg + audio/<id>.wav, in parallel, resumable, with a failures list."""

from __future__ import annotations

import argparse
import csv
import wave

import numpy as np
import pytest

from training.prepare import add_arguments, find_videos, prepare, run


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three H.264 + AAC clips (5 s, 2 s, 4 s; one in a sub-folder) and one corrupt file."""
    from training.mediafiles import write_mp4

    root = tmp_path_factory.mktemp("videos")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    for path, seconds, colour in (("one.mp4", 5.0, 40), ("two.mp4", 2.0, 120), ("sub/three.mp4", 4.0, 200)):
        image = np.full((48, 64, 3), colour, dtype=np.uint8)
        write_mp4(root / path, image, rng.uniform(-0.5, 0.5, int(16000 * seconds)), 16000)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + rng.bytes(2000))
    return root


def _wav(path):
    with wave.open(str(path), "rb") as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()


def test_prepare_writes_frames_and_centred_audio_and_lists_the_failure(videos, tmp_path):
    out = tmp_path / "dataset"
    assert sorted(j.id for j in find_videos(videos)) == ["broken", "one", "three", "two"]
    assert run(_args(str(videos), "-o", str(out), "--workers", "2", "--no-progress")) == 0

    assert sorted(p.stem for p in (out / "frames").glob("*.jpg")) == ["one", "three", "two"]
    assert sorted(p.stem for p in (out / "audio").glob("*.wav")) == ["one", "three", "two"]
    # mono 16-bit PCM at 16 kHz: the centred 3 s, or the whole clip when it is shorter
    assert _wav(out / "audio" / "one.wav") == (1, 2, 16000, 48000)
    assert _wav(out / "audio" / "two.wav")[3] == pytest.approx(32000, abs=400)
    from fnac.images import decode_image

    frame = decode_image(out / "frames" / "three.jpg")
    assert frame.shape == (48, 64, 3) and abs(float(frame.mean()) - 200) < 6
    with (out / "failures.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["broken"] and rows[0]["reason"]
    assert not list(out.rglob("*.tmp"))  # atomic writes leave nothing behind

    # rerun: done ids are skipped, the broken one is retried and still listed
    stamp = (out / "audio" / "one.wav").stat().st_mtime_ns
    result = prepare(videos, out, workers=2, progress=False)
    assert result["skipped"] == 3 and result["done"] == 0 and result["failed"] == 1
    assert (out / "audio" / "one.wav").stat().st_mtime_ns == stamp

    # the prepared directory is a training dataset
    from model.config import FNACConfig
    from training.datasets import open_dataset

    dataset = open_dataset(out, FNACConfig(image_size=64), "train")
    assert sorted(s.id for s in dataset.samples) == ["one", "three", "two"]
    assert dataset[0]["audio"].shape == (48000,)


def test_csv_input_and_exit_status_when_everything_fails(videos, tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,id\n{videos / 'two.mp4'},clip2\n")
    out = tmp_path / "from_csv"
    assert run(_args(str(manifest), "-o", str(out), "--workers", "1", "--no-progress", "--seconds", "1")) == 0
    assert _wav(out / "audio" / "clip2.wav")[3] == 16000

    bad = tmp_path / "bad.csv"
    bad.write_text(f"{videos / 'broken.mp4'}\n{tmp_path / 'missing.mp4'}\n")
    assert run(_args(str(bad), "-o", str(tmp_path / "bad_out"), "--no-progress")) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(_args(str(empty), "-o", str(tmp_path / "empty_out"), "--no-progress")) == 2


def test_a_folder_scan_takes_every_video_container_and_names_what_it_skips(tmp_path, caplog):
    from training.mediafiles import write_mp4

    image = np.full((32, 32, 3), 90, dtype=np.uint8)
    for name in ("phone.3gp", "camera.M4V", "old.mpg"):  # an MP4 stream inside: FFmpeg goes by content
        write_mp4(tmp_path / name, image, np.zeros(8000), 16000)
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "cover.jpg").write_bytes(b"not a video either")
    (tmp_path / ".DS_Store").write_bytes(b"hidden")
    with caplog.at_level("WARNING", logger="fnac.prepare"):
        jobs = find_videos(tmp_path)
    assert sorted(job.id for job in jobs) == ["camera", "old", "phone"]
    [warning] = [r.getMessage() for r in caplog.records]
    assert "skipped 2 file(s)" in warning and "cover.jpg" in warning and "notes.txt" in warning
    assert ".DS_Store" not in warning
