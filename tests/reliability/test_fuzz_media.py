"""Hypothesis over the decode + preprocessing path: mutated media give model-shaped arrays or a MediaError,
nothing else, and no example takes long (a hang would trip the deadline)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import fuzzing

# Pillow warns about every damaged TIFF/EXIF tag it skips; those are the inputs we want, not a problem.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FAST = settings(
    max_examples=300,
    deadline=10_000,  # ms; the CPU is shared, a real hang is far longer
    derandomize=True,  # the same examples on every run of the suite; `make reliability` explores
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module", autouse=True)
def _seeds():
    fuzzing.seeds()  # encode the seed files once, outside the deadline


# The fuzz tests accept a MediaError for any input, so a decoder that refused everything would pass them; the
# unmutated seeds must therefore decode, every family through every checked path.
@pytest.mark.parametrize("clip", fuzzing.CLIPS)
def test_every_seed_clip_decodes(clip):
    assert fuzzing.check_video(fuzzing.seeds()[clip], None)
    assert fuzzing.check_video(fuzzing.seeds()[clip], 2.0)  # the 20 s mkv at 0.5 s is over the window limit


@pytest.mark.parametrize("image", fuzzing.IMAGES)
def test_every_seed_image_decodes_with_every_seed_sound(image):
    files = fuzzing.seeds()
    assert fuzzing.check_image(files[image])
    assert all(fuzzing.check_image_audio(files[image], files[sound]) for sound in fuzzing.SOUNDS)


@pytest.mark.parametrize("sound", fuzzing.SOUNDS)
def test_every_seed_sound_decodes(sound):
    assert fuzzing.check_audio(fuzzing.seeds()[sound])


@FAST
@given(data=fuzzing.mutated(fuzzing.CLIPS), stride=st.sampled_from([None, 0.5, 1e-9]))
def test_clip_decoding_gives_model_inputs_or_a_media_error(data, stride):
    fuzzing.check_video(data, stride)


@FAST
@given(image=fuzzing.mutated(fuzzing.IMAGES), audio=fuzzing.mutated(fuzzing.SOUNDS))
def test_image_audio_decoding_gives_model_inputs_or_a_media_error(image, audio):
    fuzzing.check_image_audio(image, audio)


@FAST
@given(data=fuzzing.mutated())
def test_image_and_audio_decoders_alone(data):
    fuzzing.check_image(data)
    fuzzing.check_audio(data)
