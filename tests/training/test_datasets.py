"""Dataset layouts (VGG-SS / synth, Flickr-SoundNet, manifest CSV), items, and decode-failure accounting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import FNACConfig
from training.datasets import (
    DatasetError,
    DecodeFailure,
    collate_pairs,
    detect_layout,
    find_samples,
    open_dataset,
)

CONFIG = FNACConfig(width=8, dim=32, image_size=64, clip_seconds=1.0)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    from training.synth import make_synth

    root = tmp_path_factory.mktemp("synth")
    make_synth(root, n_classes=4, n_train=12, n_val=4, n_test=4, image_size=64, clip_seconds=1.5,
               distractors=(0, 1), negatives=False)  # fmt: skip
    return root


def _write_pair(root, clip_id, seconds=1.0, size=(48, 80), seed=0):
    from PIL import Image

    from training.mediafiles import wav_bytes

    rng = np.random.default_rng(seed)
    (root / "frames").mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "frames" / f"{clip_id}.jpg")
    (root / "audio" / f"{clip_id}.wav").write_bytes(
        wav_bytes(rng.uniform(-0.5, 0.5, int(16000 * seconds)), 16000)
    )


def test_vggss_layout_splits_and_items_match_the_service_preprocessing(synth_dir):
    from fnac.images import decode_image
    from fnac.media import decode_audio, fit_audio_window, resize_image

    train_ids = (synth_dir / "splits" / "train.txt").read_text().split()
    train = open_dataset(synth_dir, CONFIG, "train")
    assert [s.id for s in train.samples] == train_ids and train.train
    val = open_dataset(synth_dir, CONFIG, "val")
    assert len(val) == 4 and val.has_boxes and val.info["evaluated"] == 4

    item = val[0]
    sample = val.samples[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (64, 64, 3)
    assert item["audio"].dtype == torch.float32 and item["audio"].shape == (16000,)
    # evaluation items are exactly what the service builds: bicubic S×S, centred window at the model rate
    expected_image = resize_image(decode_image(sample.frame), 64)
    expected_audio = fit_audio_window(decode_audio(sample.audio, sample_rate=16000), 16000)
    assert np.array_equal(item["image"].numpy(), expected_image)
    assert np.array_equal(item["audio"].numpy(), expected_audio)
    gt = item["gt"].numpy()
    assert gt.shape == (224, 224) and set(np.unique(gt)) <= {0.0, 1.0} and gt.sum() > 0

    # training items: augmented (random crop / flip) but same shapes; random windows stay inside the clip
    torch.manual_seed(0)
    aug = open_dataset(synth_dir, CONFIG, "train", audio_window="random")
    first = aug[0]
    assert first["image"].shape == (64, 64, 3) and first["audio"].shape == (16000,)
    assert "gt" not in first


def test_train_split_without_list_never_includes_test_or_val_ids(synth_dir, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(synth_dir, root)
    (root / "splits" / "train.txt").unlink()
    samples, info = find_samples(root, "train")
    test_ids = set((root / "splits" / "test.txt").read_text().split())
    val_ids = set((root / "splits" / "val.txt").read_text().split())
    assert len(samples) == 12 and not ({s.id for s in samples} & (test_ids | val_ids))
    assert "not listed" in info["ids_from"]


def test_decode_failures_are_returned_counted_and_never_replaced(synth_dir, tmp_path):
    import shutil

    from torch.utils.data import DataLoader

    root = tmp_path / "copy"
    shutil.copytree(synth_dir, root)
    broken = (root / "splits" / "train.txt").read_text().split()[3]
    (root / "audio" / f"{broken}.wav").write_bytes(b"RIFF\x00\x00not a wave file at all")
    dataset = open_dataset(root, CONFIG, "train")
    failure = dataset[3]
    assert isinstance(failure, DecodeFailure) and failure.id == broken and failure.reason

    batches = list(DataLoader(dataset, batch_size=4, collate_fn=collate_pairs))
    ids = [i for b in batches for i in b["ids"]]
    assert sum(len(b["failed"]) for b in batches) == 1 and [f for b in batches for f in b["failed"]] == [
        broken
    ]
    assert len(ids) == 11 and broken not in ids and len(set(ids)) == 11  # nothing substituted
    assert batches[0]["image"].shape == (3, 64, 64, 3) and batches[0]["audio"].shape == (3, 16000)


def test_flickr_layout_evaluates_the_intersection_with_consensus_maps(tmp_path):
    from training.annotations import write_flickr_xml

    root = tmp_path / "flickr"
    for n, clip_id in enumerate(["100", "101", "102", "103"]):
        _write_pair(root, clip_id, seed=n)
    # 100 and 101 annotated (two annotators that overlap partly), 104 annotated but without media
    for clip_id in ("100", "101", "104"):
        write_flickr_xml(root / "Annotations" / f"{clip_id}.xml", [(0, 0, 128, 128), (64, 64, 192, 192)])
    (root / "flickr_test.csv").write_text("100,1\r\n101,2\r\n104,3\r\n")
    assert detect_layout(root) == "flickr"

    test = open_dataset(root, CONFIG, "test")
    assert sorted(s.id for s in test.samples) == ["100", "101"]
    assert test.info["listed"] == 3 and test.info["missing_media"] == 1 and test.info["evaluated"] == 2
    gt = test[0]["gt"].numpy()
    assert set(np.unique(gt)) == {0.0, 0.5, 1.0}  # the consensus map: one or two annotators
    assert gt[100, 100] == 1.0 and gt[10, 10] == 0.5 and gt[200, 200] == 0.0

    train = open_dataset(root, CONFIG, "train")
    assert sorted(s.id for s in train.samples) == ["102", "103"]  # test ids held out


def test_manifest_csv_decodes_videos_and_counts_missing_ones(tmp_path):
    from training.mediafiles import write_mp4

    rng = np.random.default_rng(0)
    for name, seconds in (("a", 2.0), ("b", 0.6)):
        write_mp4(tmp_path / f"{name}.mp4", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
                  rng.uniform(-0.5, 0.5, int(16000 * seconds)), 16000)  # fmt: skip
    manifest = tmp_path / "videos.csv"
    manifest.write_text("path,id\na.mp4,clip_a\nb.mp4\nmissing.mp4,gone\n")
    assert detect_layout(manifest) == "manifest"
    dataset = open_dataset(manifest, CONFIG, "train")
    assert [s.id for s in dataset.samples] == ["clip_a", "b", "gone"]
    batch = collate_pairs([dataset[i] for i in range(3)])
    assert batch["ids"] == ["clip_a", "b"] and batch["failed"] == ["gone"]
    assert batch["image"].shape == (2, 64, 64, 3) and batch["audio"].shape == (2, 16000)
    assert float(batch["audio"][1].abs().max()) > 0  # the 0.6 s clip is tiled to the window


def test_unknown_layout_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="frames/"):
        detect_layout(tmp_path)
