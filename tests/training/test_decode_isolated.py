"""`decode_isolated`: the Ray engine's decoding in a child process, where a crashing decoder fails one item."""

from __future__ import annotations

import os

import numpy as np

from fnac import pipeline
from tests.training.test_score import write_clip
from training.score_inputs import DecodeJob, Failure, Item, decode_isolated, decode_item


def crash_on_poison(item: Item, job: DecodeJob):
    """decode_item, except that the item named 'poison' kills its process the way a crashing FFmpeg would."""
    if item.id == "poison":
        os.abort()
    return decode_item(item, job)


def test_a_crashing_decoder_fails_its_item_and_the_next_items_decode(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", 80, 48, 3.0, seed=3)
    good, poison = Item(id="clip", video=clip), Item(id="poison", video=clip)
    job = DecodeJob(spec=pipeline.InputSpec(image_size=64, sample_rate=16000, clip_seconds=3.0), stride=1.0)

    expected = decode_item(good, job)
    first = decode_isolated(good, job, crash_on_poison)
    assert not isinstance(first, Failure)
    assert first.times == expected.times
    for a, b in zip(first.images, expected.images, strict=True):
        np.testing.assert_array_equal(a, b)

    for _ in range(2):  # on every try, not only the first
        crashed = decode_isolated(poison, job, crash_on_poison)
        assert crashed == Failure("decoder_crashed", "the decoder process died while decoding 'poison'")

    again = decode_isolated(good, job, crash_on_poison)  # a new child took over
    assert not isinstance(again, Failure) and again.times == expected.times
