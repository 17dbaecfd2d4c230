"""Class-controlled batches (`fnac train --classes-per-batch / --fn-rate`): the rate they give, over one and two
processes, class balance, reproducibility, and where the classes come from."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from training.datasets import DatasetError
from training.sampler import (
    ClassBatchSampler,
    class_labels,
    classes_for_rate,
    expected_rate,
    false_negative_pairs,
)

# 10 classes of unequal size (130 to 250 clips, each more than a batch of 128): balance is not assumed
LABELS = np.repeat(np.arange(10), [130, 160, 200, 250, 140, 150, 220, 180, 135, 235])


def _rank_batches(sampler: ClassBatchSampler) -> list[list[int]]:
    local = sampler.batch_size // sampler.world_size
    order = list(sampler)
    return [order[i : i + local] for i in range(0, len(order), local)]


def _global_batches(labels, batch_size, per_batch, world_size, seed=0, share=0.0) -> list[list[int]]:
    """What the loss sees: every rank's k-th batch, concatenated in rank order (training.distributed)."""
    shares = []
    for rank in range(world_size):
        sampler = ClassBatchSampler(
            labels,
            batch_size,
            per_batch,
            rank=rank,
            world_size=world_size,
            seed=seed,
            more_classes_share=share,
        )
        sampler.set_epoch(2)
        shares.append(_rank_batches(sampler))
    assert len({len(s) for s in shares}) == 1  # every rank takes the same number of steps
    return [[i for part in parts for i in part] for parts in zip(*shares, strict=True)]


def _measured_rate(labels, batches) -> float:
    same = pairs = 0
    for batch in batches:
        s, p = false_negative_pairs(torch.as_tensor(labels[batch]))
        same, pairs = same + s, pairs + p
    return same / pairs


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("batch_size", [32, 128])
@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_measured_rate_over_an_epoch_is_the_requested_one(rate, batch_size, world_size):
    per_batch, share = classes_for_rate(rate, batch_size, n_classes=10)
    batches = _global_batches(LABELS, batch_size, per_batch, world_size, seed=3, share=share)
    assert len(batches) == len(LABELS) // batch_size
    assert all(len(b) == batch_size and len(set(b)) == batch_size for b in batches)
    assert abs(_measured_rate(LABELS, batches) - rate) <= 0.02
    # every global batch holds M classes, or M + 1 in the planned share of them
    classes = [len(set(LABELS[b].tolist())) for b in batches]
    assert set(classes) <= {per_batch, per_batch + 1}
    assert classes.count(per_batch + 1) == round(share * len(batches))


def test_each_rank_share_is_drawn_from_the_same_classes_in_about_equal_parts():
    for rank_batches in zip(
        *(_rank_batches(ClassBatchSampler(LABELS, 64, 4, rank=r, world_size=2, seed=1)) for r in range(2)),
        strict=True,
    ):
        counts = [Counter(LABELS[b].tolist()) for b in rank_batches]
        assert set(counts[0]) == set(counts[1]) and len(counts[0]) == 4
        assert all(abs(counts[0][c] - counts[1][c]) <= 1 for c in counts[0])


def test_rate_of_few_classes_per_batch_is_the_pair_count():
    # 2 classes in a batch of 8: 4 + 4 clips, 2·4·3 same-class ordered pairs of 8·7
    assert expected_rate(8, 2) == pytest.approx(24 / 56)
    assert expected_rate(8, 1) == 1.0
    assert expected_rate(128, 10) == pytest.approx((8 * 13 * 12 + 2 * 12 * 11) / (128 * 127))
    # a rate some M gives exactly: every batch from M classes
    assert classes_for_rate(expected_rate(32, 3), 32, n_classes=10) == (3, 0.0)
    # between M = 3 (0.3125) and 4 (0.2258): the share of 4-class batches that averages to 0.3
    per_batch, share = classes_for_rate(0.3, 32, n_classes=10)
    assert per_batch == 3 and (1 - share) * expected_rate(32, 3) + share * expected_rate(
        32, 4
    ) == pytest.approx(0.3)
    assert classes_for_rate(0.0, 32, n_classes=10) == (10, 0.0)  # the lowest this data allows
    with pytest.raises(ValueError, match="between 0 and 1"):
        classes_for_rate(1.5, 32, 10)
    with pytest.raises(DatasetError, match="10 classes"):
        ClassBatchSampler(LABELS, 32, 11)


def test_batches_are_reproducible_for_a_seed_and_change_with_seed_and_epoch():
    def epoch_batches(seed, epoch):
        sampler = ClassBatchSampler(LABELS, 32, 3, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert epoch_batches(7, 2) == epoch_batches(7, 2)
    assert epoch_batches(7, 2) != epoch_batches(8, 2)
    assert epoch_batches(7, 2) != epoch_batches(7, 3)


def test_classes_are_drawn_about_equally_often_over_an_epoch():
    batches = _global_batches(LABELS, 30, 3, world_size=1, seed=0)
    drawn = Counter(c for b in batches for c in set(LABELS[b].tolist()))
    assert set(drawn) == set(range(10))
    assert max(drawn.values()) - min(drawn.values()) <= 1  # classes are dealt from a shuffled deck
    # within a class, no clip comes back before the class's pool is used up
    clips = Counter(i for b in batches for i in b)
    assert max(clips.values()) <= 2


def test_class_labels_from_synth_annotations_or_a_labels_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    records = [{"file": "a", "class": "dog"}, {"file": "b", "class": "cat"}, {"file": "c", "class": "dog"}]
    (data / "annotations.json").write_text(json.dumps({"classes": [], "samples": records}))
    assert class_labels(data, ["a", "b", "c"]) == ([1, 0, 1], ["cat", "dog"])
    with pytest.raises(DatasetError, match="no class for 1 of 4 training samples"):
        class_labels(data, ["a", "b", "c", "d"])
    labels_file = tmp_path / "labels.json"
    labels_file.write_text(json.dumps([{"file": "d", "class": "owl"}, {"file": "a", "class": "cat"}]))
    assert class_labels(data, ["d", "a"], labels_file) == ([1, 0], ["cat", "owl"])
    with pytest.raises(DatasetError, match="no class labels beside"):
        class_labels(tmp_path / "elsewhere", ["a"])
