"""The synthetic benchmark: determinism, layout, box correctness, negatives, MP4 clips, priors."""

import json
from pathlib import Path

import numpy as np
import pytest

from training.annotations import load_id_list, load_synth_annotations, load_vggss_json
from training.mediafiles import read_wav
from training.priors import evaluate_priors
from training.scenes import render_scene
from training.synth import SynthConfig, make_classes, make_synth

SMALL = dict(
    n_classes=6, n_train=6, n_val=3, n_test=5, image_size=64, sample_rate=8000, clip_seconds=1.0, seed=3,
    mp4_clips=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    make_synth(out, **SMALL)
    return out


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(synth_dir, tmp_path):
    make_synth(tmp_path / "again", **{**SMALL, "workers": 2})  # worker count must not matter
    assert _all_bytes(tmp_path / "again") == _all_bytes(synth_dir)
    make_synth(tmp_path / "other", **{**SMALL, "seed": 4, "mp4_clips": 0})
    assert (tmp_path / "other" / "frames" / "test_000000.jpg").read_bytes() != (
        synth_dir / "frames" / "test_000000.jpg"
    ).read_bytes()


def test_layout_is_parsed_by_the_annotation_loaders(synth_dir):
    splits = {s: load_id_list(synth_dir / "splits" / f"{s}.txt") for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [6, 3, 5]
    test = load_vggss_json(synth_dir / "vggss.json")
    assert list(test) == splits["test"]
    assert list(load_vggss_json(synth_dir / "vggss_val.json")) == splits["val"]
    for ids in splits.values():
        for i in ids:
            assert (synth_dir / "frames" / f"{i}.jpg").is_file()
            audio, rate = read_wav(synth_dir / "audio" / f"{i}.wav")
            assert rate == 8000 and audio.shape == (8000,) and np.abs(audio).max() > 0.25
    data = load_synth_annotations(synth_dir / "annotations.json")
    assert len(data["samples"]) == 14 and len(data["classes"]) == 6
    for sample in data["samples"]:
        sounding = [o for o in sample["objects"] if o["sounding"]]
        assert len(sounding) == 1 and sounding[0]["bbox"] == sample["bbox"][0]
        assert sounding[0]["class"] == sample["class"]
        classes = [o["class_index"] for o in sample["objects"]]
        assert len(set(classes)) == len(classes)  # distractors are of other classes
        assert 1 <= len(classes) - 1 <= 3
    meta = json.loads((synth_dir / "meta.json").read_text())
    assert meta["config"]["seed"] == 3 and meta["config"]["n_classes"] == 6
    from PIL import Image

    with Image.open(synth_dir / "frames" / f"{splits['test'][0]}.jpg") as image:
        assert image.size == (64, 64) and image.mode == "RGB"


def test_sounding_object_pixels_lie_inside_its_box():
    cfg = SynthConfig(n_classes=8, image_size=96, distractors=(2, 3))
    cfg.classes = make_classes(cfg.n_classes, 0)
    contrasts = []
    for index in range(25):
        rng = np.random.default_rng([0, index])
        image, objects, masks, labels = render_scene(
            rng, cfg, index % 8, [(index + 1) % 8, (index + 3) % 8], return_masks=True
        )
        for obj, mask in zip(objects, masks, strict=True):
            x0, y0, x1, y1 = obj["bbox_px"]
            ys, xs = np.nonzero(mask)
            assert xs.min() == x0 and xs.max() == x1 - 1 and ys.min() == y0 and ys.max() == y1 - 1  # tight
            assert obj["bbox"] == [x0 / 96, y0 / 96, x1 / 96, y1 / 96]
        visible = labels == 0  # the sounding object is listed first
        ys, xs = np.nonzero(visible)
        x0, y0, x1, y1 = objects[0]["bbox_px"]
        assert ys.size >= 0.6 * masks[0].sum()  # min_visible
        assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
        assert image.shape == (96, 96, 3)
        # how far the sounding object's visible pixels are from the background's, in median colour
        shown, background = image[visible].astype(float), image[labels == -1].astype(float)
        contrasts.append(np.abs(np.median(shown, axis=0) - np.median(background, axis=0)).max())
    # The objects are really drawn: about 96 grey levels apart on average here; an unpainted scene (only the
    # textured background where the objects should be) gives about 9.
    assert np.mean(contrasts) > 40


def test_negatives_exist_and_offscreen_class_is_absent(synth_dir):
    test_ids = load_id_list(synth_dir / "splits" / "test.txt")
    offscreen = json.loads((synth_dir / "negatives" / "offscreen.json").read_text())
    samples = {s["file"]: s for s in load_synth_annotations(synth_dir / "annotations.json")["samples"]}
    for i in test_ids:
        silence, _ = read_wav(synth_dir / "negatives" / "silence" / f"{i}.wav")
        noise, _ = read_wav(synth_dir / "negatives" / "noise" / f"{i}.wav")
        other, rate = read_wav(synth_dir / "negatives" / "offscreen" / f"{i}.wav")
        assert silence.shape == noise.shape == other.shape == (8000,) and rate == 8000
        assert np.abs(silence).max() == 0 and noise.std() > 0.01 and np.abs(other).max() > 0.25
        assert offscreen[i] not in {o["class"] for o in samples[i]["objects"]}


def test_noise_negatives_span_colours_and_levels_up_to_full_scale():
    """A threshold calibrated on quiet hiss alone says nothing about loud hiss: the noise negatives must cover
    the range, each at the level and colour its annotation records."""
    from training.sounds import NOISE_COLOURS, NOISE_DBFS, plain_noise, unit_noise

    rng = np.random.default_rng(0)
    drawn = [plain_noise(rng, 16000) for _ in range(60)]
    levels = [params["level_dbfs"] for _, params in drawn]
    assert {params["colour"] for _, params in drawn} == {"white", "uniform", "pink"}
    assert min(levels) < NOISE_DBFS[0] + 6 and max(levels) > NOISE_DBFS[1] - 6  # clipping takes < 1 dB
    for noise, params in drawn:
        rms_dbfs = 20 * np.log10(np.sqrt(np.mean(noise**2)))
        assert abs(rms_dbfs - params["level_dbfs"]) < 0.01
        assert np.abs(noise).max() <= 1
        spectrum = np.abs(np.fft.rfft(noise)) ** 2
        low, high = spectrum[10:800].mean(), spectrum[4000:8000].mean()
        if params["colour"] == "pink":
            assert low > 5 * high  # power falls with frequency
        else:
            assert 0.7 < low / high < 1.4  # flat
    for colour in NOISE_COLOURS:  # batches of rows, as the default-model test draws them: unit RMS per row
        rows = unit_noise(rng, colour, (3, 4000))
        assert rows.shape == (3, 4000) and np.allclose(np.sqrt(np.mean(rows**2, axis=1)), 1.0)
    with pytest.raises(ValueError, match="brown"):
        unit_noise(rng, "brown", 100)


def test_mp4_clip_decodes_with_both_streams(synth_dir):
    av = pytest.importorskip("av")
    clips = sorted((synth_dir / "clips").glob("*.mp4"))
    assert [c.stem for c in clips] == ["test_000000"]
    with av.open(str(clips[0])) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(clips[0])) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    assert len(frames) == 10 and frames[0].shape == (64, 64, 3)
    assert 0.9 * 8000 <= audio.size <= 1.2 * 8000 and np.abs(audio).max() > 0.1
    from PIL import Image

    jpeg = np.asarray(Image.open(synth_dir / "frames" / "test_000000.jpg"), dtype=np.float64)
    assert np.abs(frames[5].astype(np.float64) - jpeg).mean() < 12  # the same scene


def test_priors_are_evaluated_and_oracle_is_best(synth_dir):
    report = evaluate_priors(synth_dir)
    for name in ("centre_box", "centre_gaussian", "largest_object", "oracle"):
        assert report[name]["n"] == 5 and 0 <= report[name]["ap50"] <= 1
    assert report["oracle"]["mean_ciou"] >= max(
        report[n]["mean_ciou"] for n in ("centre_box", "largest_object")
    )


def test_config_validation():
    with pytest.raises(ValueError, match="n_classes"):
        SynthConfig(n_classes=3, distractors=(1, 3))
    with pytest.raises(ValueError, match="image_size"):
        SynthConfig(image_size=63)
    with pytest.raises(ValueError, match="preset"):
        make_synth("/nonexistent-never-written", preset="nope")


def test_explicit_knobs_override_the_preset(tmp_path):
    tiny = dict(n_classes=6, n_train=4, n_val=0, n_test=0, image_size=64, sample_rate=8000, clip_seconds=0.5)
    plain = make_synth(tmp_path / "preset", preset="headroom", negatives=False, **tiny)
    assert tuple(plain["config"]["distractors"]) == (2, 4) and tuple(plain["config"]["area_range"]) == (
        0.15,
        0.55,
    )
    mixed = make_synth(tmp_path / "mixed", preset="headroom", distractors=(0, 0), negatives=False, **tiny)
    assert tuple(mixed["config"]["distractors"]) == (0, 0)  # given explicitly: wins over the preset's 2-4
    assert tuple(mixed["config"]["area_range"]) == (0.15, 0.55)  # not given: the preset's
    scenes = load_synth_annotations(tmp_path / "mixed" / "annotations.json")["samples"]
    assert scenes and all(len(scene["objects"]) == 1 for scene in scenes)
    default = make_synth(tmp_path / "default", negatives=False, **tiny)
    assert tuple(default["config"]["distractors"]) == (1, 3) and default["preset"] == "vggss"
