"""Training data from phone-style clips: `fnac prepare` and video manifests take frames as displayed."""

from __future__ import annotations

import numpy as np

from fnac.images import decode_image
from model.config import FNACConfig
from tests.service.conftest import frame_with_square, make_clip, rotated_copy, tone
from training.datasets import open_dataset
from training.prepare import prepare

SQUARE = (44, 4, 60, 20)  # top right of a stored 64 x 48 frame


def stored_and_tagged(tmp_path) -> tuple[np.ndarray, bytes]:
    frame = frame_with_square(64, 48, SQUARE)
    clip = make_clip([frame] * 20, tone(2.0, 16000), rate=16000)
    return frame, rotated_copy(clip, 90, tmp_path)


def test_prepare_stores_the_displayed_frame(tmp_path):
    stored, tagged = stored_and_tagged(tmp_path)
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "phone.mp4").write_bytes(tagged)
    prepare(videos, tmp_path / "dataset", workers=0, progress=False)
    frame = decode_image(tmp_path / "dataset" / "frames" / "phone.jpg")
    expected = np.rot90(stored)  # rotate=90: a quarter turn counter-clockwise, 48 wide and 64 tall
    assert frame.shape == expected.shape == (64, 48, 3)
    assert np.abs(frame.astype(int) - expected).mean() < 8


def test_video_manifest_samples_are_upright(tmp_path):
    stored, tagged = stored_and_tagged(tmp_path)
    (tmp_path / "phone.mp4").write_bytes(tagged)
    manifest = tmp_path / "videos.csv"
    manifest.write_text("path,id\nphone.mp4,phone\n")
    dataset = open_dataset(manifest, FNACConfig(width=8, dim=32, image_size=48), "train")
    frame, _ = dataset.decode(0)
    assert frame.shape == (64, 48, 3)
    assert np.abs(frame.astype(int) - np.rot90(stored)).mean() < 8
