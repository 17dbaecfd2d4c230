"""`fnac score`: offline batch scoring to JSONL, on generated media and the tiny exported FNAC model."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from fnac.cli import main as fnac_main
from training.score_inputs import find_items, parse_shard
from training.score_local import score_items
from training.score_output import load_existing

ROOT = Path(__file__).resolve().parents[2]
RATE = 16_000
CLIP_SIZES = {"clip_a": (96, 64, 4.0), "clip_b": (80, 60, 3.5), "long": (64, 48, 10.0)}  # w, h, seconds
PAIR_SIZES = {"pair_a": (72, 56), "pair_b": (50, 70)}
ALL_IDS = sorted([*CLIP_SIZES, *PAIR_SIZES, "corrupt"])


def _tone(seconds: float, freq: float = 440.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _frame(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = np.full((height, width, 3), 40, np.uint8)
    x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
    frame[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.integers(128, 255, 3)
    return frame


def write_clip(path: Path, width: int, height: int, seconds: float, seed: int = 0, fps: int = 5) -> Path:
    """H.264 + AAC mp4 whose brightness ramps over time (so frames at different times differ)."""
    base = _frame(width, height, seed)
    audio_rate = 22_050
    wave_ = _tone(seconds, 330.0 + 50 * seed, audio_rate)
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=audio_rate, layout="mono")
        for i in range(round(seconds * fps)):
            frame = np.clip(base.astype(np.int16) + 10 * i, 0, 255).astype(np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        for start in range(0, wave_.size, 1024):
            chunk = av.AudioFrame.from_ndarray(
                wave_[None, start : start + 1024].copy(), format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = audio_rate, start
            for packet in audio.encode(chunk):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """videos/ (three clips, one 10 s long, and a corrupt .mp4) and data/ (a dataset dir of frame + audio)."""
    root = tmp_path_factory.mktemp("score_media")
    videos = root / "videos"
    (videos / "sub").mkdir(parents=True)
    for seed, (name, (w, h, seconds)) in enumerate(CLIP_SIZES.items()):
        folder = videos / "sub" if name == "clip_b" else videos  # directories are searched recursively
        write_clip(folder / f"{name}.mp4", w, h, seconds, seed)
    (videos / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    data = root / "data"
    (data / "frames").mkdir(parents=True)
    (data / "audio").mkdir()
    for seed, (name, (w, h)) in enumerate(PAIR_SIZES.items()):
        Image.fromarray(_frame(w, h, 10 + seed)).save(data / "frames" / f"{name}.jpg", quality=95)
        t = np.arange(4 * RATE) / RATE  # a chirp: each audio window sounds different
        write_wav(data / "audio" / f"{name}.wav", 0.4 * np.sin(2 * np.pi * (300 + 200 * seed + 400 * t) * t))
    return {"root": root, "videos": videos, "data": data}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_id(lines: list[dict]) -> dict[str, dict]:
    return {line["id"]: line for line in lines}


@pytest.fixture(scope="module")
def scored(media, tiny_onnx_model, tmp_path_factory) -> tuple[Path, Path]:
    """One full CLI run over all inputs, with overlay PNGs; returns (OUT, PNG dir)."""
    out_dir = tmp_path_factory.mktemp("scored")
    out, pngs = out_dir / "scores.jsonl", out_dir / "png"
    inputs = [str(media["videos"]), str(media["data"])]
    options = ["--png-dir", str(pngs), "--batch-size", "3", "--workers", "2", "--no-progress"]
    code = fnac_main(["score", "--model", str(tiny_onnx_model), *inputs, "-o", str(out), *options])
    assert code == 0
    return out, pngs


def _tau(model: Path) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return float(session.get_modelmeta().custom_metadata_map["tau"])


def test_every_item_gets_one_line_with_the_documented_fields(scored, tiny_onnx_model):
    out, _ = scored
    tau = _tau(tiny_onnx_model)
    lines = read_jsonl(out)
    assert sorted(line["id"] for line in lines) == ALL_IDS
    sizes = {k: v[:2] for k, v in CLIP_SIZES.items()} | PAIR_SIZES
    for line in lines:
        if line["id"] == "corrupt":
            continue
        assert line["error"] is None
        assert (line["width"], line["height"]) == sizes[line["id"]]
        assert -1.0 <= line["score"] <= 1.0
        assert line["sounding"] == (line["score"] >= 0.5)  # the model's calibrated threshold
        assert line["model"]["name"] == "tiny-test" and len(line["model"]["sha256"]) == 64
        heatmap = np.array(line["heatmap"])
        assert heatmap.ndim == 2 and heatmap.shape[0] >= 1
        # score is max(heatmap) × τ (the ONNX contract); the heatmap is rounded to 4 decimals
        assert line["score"] == pytest.approx(heatmap.max() * tau, abs=1e-3)
        # A non-constant heatmap has at least one box, shown only when the window is sounding.
        assert bool(line["boxes"]) == line["sounding"]
        for box in line["boxes"]:
            assert 0 <= box["x0"] < box["x1"] <= line["width"]
            assert 0 <= box["y0"] < box["y1"] <= line["height"]
            assert box["score"] <= line["score"] + 1e-5
    lines = by_id(lines)
    assert lines["clip_a"]["time"] == pytest.approx(2.0, abs=0.05)  # the middle of a 4 s clip
    assert lines["pair_a"]["time"] is None
    assert lines["pair_a"]["source"]["image"].endswith("frames/pair_a.jpg")
    assert lines["pair_a"]["source"]["audio"].endswith("audio/pair_a.wav")
    assert lines["clip_b"]["source"]["video"].endswith("sub/clip_b.mp4")


def test_boxes_always_gives_boxes_for_windows_that_are_not_sounding(media, tiny_onnx_model, tmp_path):
    out = tmp_path / "always.jsonl"
    args = ["score", "--model", str(tiny_onnx_model), str(media["data"]), "--no-progress"]
    assert fnac_main([*args, "--sounding-threshold", "1.5", "--boxes", "always", "-o", str(out)]) == 0
    lines = read_jsonl(out)
    assert lines and all(not line["sounding"] and line["boxes"] for line in lines)
    default = tmp_path / "default.jsonl"
    assert fnac_main([*args, "--sounding-threshold", "1.5", "-o", str(default)]) == 0
    assert all(line["boxes"] == [] for line in read_jsonl(default))


def test_score_matches_a_direct_model_run(scored, media, tiny_onnx_model):
    """The JSONL score of a pair equals the model run on the same preprocessing done independently."""
    import onnxruntime as ort

    out, _ = scored
    line = by_id(read_jsonl(out))["pair_a"]
    session = ort.InferenceSession(str(tiny_onnx_model), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    size, n = int(meta["image_size"]), round(int(meta["sample_rate"]) * float(meta["clip_seconds"]))
    image = (
        Image.open(media["data"] / "frames" / "pair_a.jpg").convert("RGB").resize((size, size), Image.BICUBIC)
    )
    with wave.open(str(media["data"] / "audio" / "pair_a.wav")) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    start = (samples.size - n) // 2
    heatmap, score = session.run(
        ["heatmap", "score"], {"image": np.asarray(image)[None], "audio": samples[None, start : start + n]}
    )
    assert line["score"] == pytest.approx(float(score[0]), abs=1e-4)
    np.testing.assert_allclose(line["heatmap"], heatmap[0], atol=1e-3)


def test_corrupt_file_is_recorded_with_its_code(scored):
    out, _ = scored
    line = by_id(read_jsonl(out))["corrupt"]
    assert line["error"]["code"] in {
        "unreadable_media",
        "corrupt_media",
        "no_video_stream",
        "no_audio_stream",
    }
    assert "corrupt.mp4" in line["error"]["message"]
    assert line["score"] is None and line["boxes"] is None


def test_pngs_have_the_frame_size(scored):
    out, pngs = scored
    for line in read_jsonl(out):
        if line["error"]:
            assert "png" not in line
            continue
        with Image.open(line["png"]) as png:
            assert png.size == (line["width"], line["height"])
            assert png.mode == "RGB"  # overlay
        assert Path(line["png"]).parent == pngs
    assert len(list(pngs.glob("*.png"))) == len(ALL_IDS) - 1


def test_stride_gives_one_line_per_window(media, tiny_onnx_model, tmp_path):
    out = tmp_path / "windows.jsonl"
    summary = score_items(
        [media["videos"] / "long.mp4", media["videos"] / "clip_a.mp4"],
        tiny_onnx_model,
        out,
        stride=1.5,
        batch_size=4,
        png_dir=tmp_path / "png",
        png="heatmap",
    )
    lines = read_jsonl(out)
    long = [line for line in lines if line["id"] == "long"]
    # windows centred every 1.5 s from 1.5 s, the last one ending inside the 10 s clip
    assert [line["time"] for line in long] == pytest.approx([1.5, 3.0, 4.5, 6.0, 7.5])
    assert [line["window"] for line in long] == list(range(5))
    assert {line["windows"] for line in long} == {5}
    short = [line for line in lines if line["id"] == "clip_a"]
    assert [line["time"] for line in short] == pytest.approx([1.5])
    assert summary.items == 2 and summary.windows == 6 and summary.failures == 0
    with Image.open(long[3]["png"]) as png:
        assert png.size == (64, 48) and png.mode == "L"  # bare heatmap
    assert len({line["png"] for line in long}) == 5


def test_stride_over_a_frame_and_audio_pair_sweeps_the_audio(media, tiny_onnx_model, tmp_path):
    out = tmp_path / "pairs.jsonl"
    score_items([media["data"]], tiny_onnx_model, out, stride=0.5, heatmap_decimals=None)
    lines = [line for line in read_jsonl(out) if line["id"] == "pair_a"]
    assert [line["time"] for line in lines] == pytest.approx([1.5, 2.0, 2.5])  # 4 s of audio, 3 s windows
    assert len({line["score"] for line in lines}) > 1  # different audio windows, different scores
    assert all("heatmap" not in line for line in lines)


def test_resume_skips_done_ids_and_repairs_a_killed_write(media, tiny_onnx_model, tmp_path):
    out = tmp_path / "resume.jsonl"
    inputs = [media["data"], media["videos"] / "clip_a.mp4"]
    first = score_items(inputs, tiny_onnx_model, out)
    assert first.items == 3
    second = score_items(inputs, tiny_onnx_model, out)
    assert (second.items, second.skipped) == (0, 3)
    assert sorted(line["id"] for line in read_jsonl(out)) == ["clip_a", "pair_a", "pair_b"]

    # a kill mid-write: the last line is cut short; resuming removes it and scores that item again
    text = out.read_text()
    last_id = read_jsonl(out)[-1]["id"]
    out.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])
    third = score_items(inputs, tiny_onnx_model, out)
    assert (third.items, third.skipped) == (1, 2)
    lines = read_jsonl(out)  # every line parses again
    assert sorted(line["id"] for line in lines) == ["clip_a", "pair_a", "pair_b"]
    assert lines[-1]["id"] == last_id


def test_resume_drops_a_sweep_whose_windows_were_not_all_written(media, tiny_onnx_model, tmp_path):
    out = tmp_path / "sweep.jsonl"
    score_items([media["videos"] / "long.mp4"], tiny_onnx_model, out, stride=2.0)
    lines = out.read_text().splitlines(keepends=True)
    assert len(lines) == 4
    out.write_text("".join(lines[:2]))  # killed after two of four windows
    existing = load_existing(out)
    assert existing.done == set() and out.read_text() == ""
    again = score_items([media["videos"] / "long.mp4"], tiny_onnx_model, out, stride=2.0)
    assert again.windows == 4 and len(read_jsonl(out)) == 4


def test_retry_failed_scores_failed_items_again(media, tiny_onnx_model, tmp_path):
    out = tmp_path / "retry.jsonl"
    clip = tmp_path / "late.mp4"
    clip.write_bytes(b"not yet a video")
    score_items([clip, media["data"]], tiny_onnx_model, out)
    assert by_id(read_jsonl(out))["late"]["error"]["code"] == "unreadable_media"
    write_clip(clip, 64, 48, 3.0)
    assert score_items([clip, media["data"]], tiny_onnx_model, out).items == 0  # failures are done, too
    summary = score_items([clip, media["data"]], tiny_onnx_model, out, retry_failed=True)
    assert (summary.items, summary.failures) == (1, 0)
    lines = read_jsonl(out)
    assert sorted(line["id"] for line in lines) == ["late", "pair_a", "pair_b"]
    assert by_id(lines)["late"]["error"] is None


def test_shards_partition_the_id_list(media, tiny_onnx_model, tmp_path):
    parts = []
    for i in range(2):
        out = tmp_path / f"part{i}.jsonl"
        inputs = [str(media["videos"]), str(media["data"])]
        options = ["--shard", f"{i}/2", "--no-heatmap", "--no-progress", "--workers", "0"]
        code = fnac_main(["score", "--model", str(tiny_onnx_model), *inputs, "-o", str(out), *options])
        assert code == 0
        parts.append({line["id"] for line in read_jsonl(out)})
    assert parts[0] | parts[1] == set(ALL_IDS)
    assert not parts[0] & parts[1]
    assert abs(len(parts[0]) - len(parts[1])) <= 1
    assert "heatmap" not in read_jsonl(tmp_path / "part0.jsonl")[0]


def test_csv_lists_give_ids_and_failures(media, tiny_onnx_model, tmp_path):
    data, videos = media["data"], media["videos"]
    listing = tmp_path / "list.tsv"
    listing.write_text(
        "id\tvideo\timage\taudio\n"
        f"first\t{videos / 'clip_a.mp4'}\t\t\n"
        f"second\t\t{data / 'frames' / 'pair_b.jpg'}\t{data / 'audio' / 'pair_b.wav'}\n"
        f"\t{videos / 'missing.mp4'}\t\t\n"
    )
    items = find_items([listing])
    assert [item.id for item in items] == ["first", "missing", "second"]
    out = tmp_path / "list.jsonl"
    summary = score_items(items, tiny_onnx_model, out, workers=1, pool="process")
    lines = by_id(read_jsonl(out))
    assert lines["missing"]["error"]["code"] == "file_not_found"
    assert lines["first"]["width"] == 96 and lines["second"]["width"] == 50
    assert (summary.items, summary.failures) == (3, 1)


def test_user_errors_exit_2_with_one_line(media, tiny_onnx_model, tmp_path, capsys):
    out = str(tmp_path / "x.jsonl")
    assert fnac_main(["score", "--model", str(tmp_path / "none.onnx"), str(media["data"]), "-o", out]) == 2
    assert fnac_main(["score", "--model", str(tiny_onnx_model), str(tmp_path / "nowhere"), "-o", out]) == 2
    assert (
        fnac_main(["score", "--model", str(tiny_onnx_model), str(media["data"]), "-o", out, "--shard", "2/2"])
        == 2
    )
    duplicate = [str(media["videos"] / "clip_a.mp4"), str(media["videos"] / "clip_a.mp4")]
    assert fnac_main(["score", "--model", str(tiny_onnx_model), *duplicate, "-o", out]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 4 and all(line.startswith("fnac score: error: ") for line in errors)
    assert not Path(out).exists()


def test_only_failures_exit_1(media, tiny_onnx_model, tmp_path):
    argv = ["score", "--model", str(tiny_onnx_model), str(media["videos"] / "corrupt.mp4")]
    assert fnac_main([*argv, "-o", str(tmp_path / "bad.jsonl"), "--no-progress"]) == 1


def test_parse_shard():
    assert parse_shard("1/4") == (1, 4)
    assert parse_shard(" 0 / 1 ") == (0, 1)


def test_score_module_imports_no_torch():
    code = "import sys, training.score; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_fnac_score_runs_where_torch_cannot_be_imported(media, tiny_onnx_model, tmp_path):
    out = tmp_path / "no_torch.jsonl"
    argv = ["score", "--model", str(tiny_onnx_model), str(media["data"]), "-o", str(out), "--no-progress"]
    code = (
        "import sys; sys.modules['torch'] = None  # any `import torch` now raises ImportError\n"
        f"from fnac.cli import main; sys.exit(main({argv!r}))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
    assert sorted(line["id"] for line in read_jsonl(out)) == ["pair_a", "pair_b"]


def test_without_model_the_bundled_one_scores_any_file_named_on_the_command_line(media, tmp_path):
    import shutil

    # a clip under an extension no folder scan takes: named here, it is tried like any upload
    clip = tmp_path / "clip_a.camera"
    shutil.copy(media["videos"] / "clip_a.mp4", clip)
    out = tmp_path / "bundled.jsonl"
    assert fnac_main(["score", str(clip), "-o", str(out), "--no-progress"]) == 0
    [line] = [json.loads(row) for row in out.read_text().splitlines()]
    assert line["id"] == "clip_a" and line["error"] is None and len(line["heatmap"]) == 7
    assert line["model"]["name"] == "fnac-synth-default"
