import json

import numpy as np
import onnx
import pytest

from fnac.cli import main
from training import metrics
from training.evaluate import evaluate
from training.layout import DatasetError


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    from training.synth import make_synth

    root = tmp_path_factory.mktemp("synth")
    make_synth(root, n_classes=6, n_train=4, n_val=4, n_test=12, image_size=64, seed=3)
    return root


def test_eval_onnx_report_plot_and_threshold(tmp_path, synth_dir, tiny_model, capsys):
    from model.export import export_onnx, read_metadata

    model_path = tmp_path / "m.onnx"
    export_onnx(tiny_model, model_path, {"model_name": "t"})
    report_path = tmp_path / "r" / "report.json"
    args = ["eval", "--model", str(model_path), "--data", str(synth_dir), "--report", str(report_path)]
    # An untrained network: no threshold both keeps real sounds and meets the 5 % target, so none is stored
    # unless forced.
    capsys.readouterr()
    assert main([*args, "--write-threshold"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert (
        errors[-1].startswith("fnac eval: error: not writing the sounding threshold")
        and "--force" in errors[-1]
    )
    assert "sounding_threshold" not in read_metadata(model_path)
    calibration = json.loads(report_path.read_text())["sounding_calibration"]
    assert calibration["tpr"] == 0 or calibration["fpr"] > calibration["target_fpr"]
    assert main([*args, "--write-threshold", "--force"]) == 0
    report = json.loads(report_path.read_text())
    assert report["n"] == 12 and report["annotated"] == 12 and report["interpolation"] == "bicubic"
    for key in ("ap50", "mean_ciou", "auc"):
        assert 0.0 <= report[key] <= 1.0
    assert set(report["negatives"]) >= {"silence", "noise", "offscreen", "all"}
    assert report_path.with_suffix(".png").stat().st_size > 1000
    # The calibrated threshold landed in the model's own metadata.
    threshold = float(read_metadata(model_path)["sounding_threshold"])
    assert threshold == pytest.approx(report["sounding_calibration"]["threshold"])
    # ... with the record of how it was calibrated, for /v1/model
    record = json.loads(read_metadata(model_path)["sounding_calibration"])
    assert record["split"] == "test" and record["data"] == synth_dir.name and record["method"] == "fpr"
    assert record["tpr"] == report["sounding_calibration"]["tpr"]
    assert record["fpr_by_kind"] == report["sounding_calibration"]["fpr_by_kind"]
    onnx.checker.check_model(onnx.load(model_path))
    # The per-sample cIoUs reproduce the summary with an independent computation.
    cious = np.array([s["ciou"] for s in report["per_sample"]])
    assert report["ap50"] == pytest.approx(np.mean(cious >= 0.5))
    assert report["mean_ciou"] == pytest.approx(cious.mean())


def test_checkpoint_and_onnx_agree(tiny_checkpoint, tiny_onnx_model, synth_dir):
    from_ckpt, _, _ = evaluate(tiny_checkpoint, synth_dir, progress=False, negatives=False)
    from_onnx, _, _ = evaluate(tiny_onnx_model, synth_dir, progress=False, negatives=False)
    assert from_ckpt["mean_ciou"] == pytest.approx(from_onnx["mean_ciou"], abs=1e-4)
    assert from_ckpt["centre_prior"] == from_onnx["centre_prior"]


def test_a_checkpoint_runs_on_the_device_asked_for(tiny_checkpoint, synth_dir):
    import torch

    on_cpu, _, _ = evaluate(tiny_checkpoint, synth_dir, progress=False, negatives=False, device="cpu")
    default, _, _ = evaluate(tiny_checkpoint, synth_dir, progress=False, negatives=False)
    assert on_cpu["mean_ciou"] == pytest.approx(default["mean_ciou"], abs=1e-5)
    if not torch.cuda.is_available():  # without a GPU, asking for one is a clear error, not a silent CPU run
        with pytest.raises(ValueError, match="no CUDA device"):
            evaluate(tiny_checkpoint, synth_dir, progress=False, negatives=False, device="cuda")


def test_threads_cap_the_model_threads_and_keep_the_numbers(tiny_checkpoint, tiny_onnx_model, synth_dir):
    import torch

    from training.predictor import Predictor

    onnx_predictor = Predictor(tiny_onnx_model, threads=1)
    assert onnx_predictor.runtime.session.get_session_options().intra_op_num_threads == 1
    before = torch.get_num_threads()
    try:
        capped, _, _ = evaluate(tiny_checkpoint, synth_dir, progress=False, negatives=False, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    default, _, _ = evaluate(tiny_checkpoint, synth_dir, progress=False, negatives=False)
    assert capped["mean_ciou"] == pytest.approx(default["mean_ciou"], abs=1e-5)
    with pytest.raises(SystemExit) as exit_info:  # argparse: a usage error, not a traceback
        main(["eval", "--model", str(tiny_onnx_model), "--data", str(synth_dir), "--threads", "-1"])
    assert exit_info.value.code == 2


def test_eval_uses_intersection_and_reports_it(tmp_path, synth_dir, tiny_onnx_model):
    import shutil

    data = tmp_path / "partial"
    shutil.copytree(synth_dir, data)
    ids = [e["file"] for e in json.loads((data / "vggss.json").read_text())]
    (data / "frames" / f"{ids[0]}.jpg").unlink()
    (data / "audio" / f"{ids[1]}.wav").write_bytes(b"corrupt")
    report, _, _ = evaluate(tiny_onnx_model, data, progress=False, negatives=False)
    assert report["annotated"] == 12 and report["evaluated"] == 10
    assert [f["id"] for f in report["failed"]] == [ids[1]]


def test_eval_bilinear_is_recorded_and_bad_dirs_fail(tmp_path, synth_dir, tiny_onnx_model):
    report, _, _ = evaluate(
        tiny_onnx_model, synth_dir, interpolation="bilinear", progress=False, negatives=False
    )
    assert report["interpolation"] == "bilinear"
    with pytest.raises(DatasetError, match="not an evaluation dataset"):
        evaluate(tiny_onnx_model, tmp_path, progress=False)
    assert metrics.EVAL_SIZE == 224


def test_calibrate_on_val_then_report_sounding_rates_on_test(tmp_path, synth_dir, tiny_model):
    from model.export import export_onnx, read_metadata

    model_path = tmp_path / "m.onnx"
    export_onnx(tiny_model, model_path, {"model_name": "t"})
    # synth writes negatives for the validation ids too, so the threshold never sees the test split
    assert sorted(p.stem for p in (synth_dir / "negatives" / "noise").glob("val_*.wav")) == [
        f"val_00000{i}" for i in range(4)
    ]
    val_report = tmp_path / "val.json"
    args = ["eval", "--model", str(model_path), "--data", str(synth_dir), "--split", "val"]
    assert main([*args, "--report", str(val_report), "--write-threshold", "--force"]) == 0
    calibrated = json.loads(val_report.read_text())
    assert calibrated["split"] == "val" and calibrated["n"] == 4
    threshold = float(read_metadata(model_path)["sounding_threshold"])
    assert threshold == pytest.approx(calibrated["sounding_calibration"]["threshold"])

    report, _, _ = evaluate(model_path, synth_dir, progress=False)
    rates = report["sounding_rate"]
    assert report["split"] == "test" and rates["threshold"] == pytest.approx(threshold)
    assert rates["silence"] == 0.0  # digital silence is under the silence gate, whatever the score
    assert set(rates) == {"threshold", "silence_dbfs", "positive", "silence", "noise", "offscreen"}
    assert all(0.0 <= rates[k] <= 1.0 for k in ("positive", "noise", "offscreen"))
    # the noise negatives by level: the bands partition them, and their rates add up to the overall one
    bands = report["negatives"]["noise"]["by_level"]
    assert sum(b["n"] for b in bands) == report["negatives"]["noise"]["n"]
    assert sum(b["n"] * b["sounding_rate"] for b in bands) / sum(b["n"] for b in bands) == pytest.approx(
        rates["noise"]
    )
    json.dumps(report, allow_nan=False)  # open band ends are null, not Infinity


def test_a_checkpoints_calibration_travels_into_its_export(tmp_path, synth_dir, tiny_checkpoint):
    import shutil

    from model.export import read_metadata

    checkpoint = tmp_path / "run.pt"
    shutil.copy(tiny_checkpoint, checkpoint)
    args = ["eval", "--model", str(checkpoint), "--data", str(synth_dir), "--split", "val"]
    assert main([*args, "--report", str(tmp_path / "val.json"), "--write-threshold", "--force"]) == 0
    calibration = json.loads((tmp_path / "val.json").read_text())["sounding_calibration"]
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "m.onnx")]) == 0
    metadata = read_metadata(tmp_path / "m.onnx")
    assert float(metadata["sounding_threshold"]) == pytest.approx(calibration["threshold"])
    record = json.loads(metadata["sounding_calibration"])
    assert record["split"] == "val" and record["tpr"] == calibration["tpr"]


def test_val_split_needs_validation_annotations(tmp_path, synth_dir, tiny_onnx_model):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(synth_dir, copy)
    (copy / "vggss_val.json").unlink()
    with pytest.raises(DatasetError, match=r"vggss_val\.json"):
        evaluate(tiny_onnx_model, copy, progress=False, split="val")


def _official_rows(runtime, synth_dir, alpha, interpolation):
    """An independent implementation of the official test.py's three rows (AV, OBJ, AV+OBJ) on the same
    inputs: torch interpolation, normalize_img, the median threshold, cal_CIOU, and the AUC over 0.05·i."""
    import torch
    import torch.nn.functional as F

    from training.layout import frames_and_audio, load_pair

    def upsample(values, mode):
        x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None, None]
        return F.interpolate(x, size=(224, 224), mode=mode, align_corners=mode == "bilinear")[0, 0].numpy()

    def normalize_img(value):
        vmin, vmax = value.min(), value.max()
        return (value - vmin) / (vmax - vmin) if vmax - vmin != 0 else value

    def cal_ciou(infer, gtmap):
        thres = np.sort(infer.flatten())[int(infer.shape[0] * infer.shape[1] * 0.5)]
        infer_map = np.zeros((224, 224))
        infer_map[infer >= thres] = 1
        return np.sum(infer_map * gtmap) / (np.sum(gtmap) + np.sum(infer_map * (gtmap == 0)))

    entries = {e["file"]: e["bbox"] for e in json.loads((synth_dir / "vggss.json").read_text())}
    frames, audio = frames_and_audio(synth_dir)
    rows = {"av": [], "obj": [], "av_obj": []}
    for sample_id in sorted(entries):
        gt = np.zeros((224, 224))
        for box in entries[sample_id]:
            x0, y0, x1, y1 = (np.clip(np.asarray(box), 0, 1) * 224).astype(int)
            gt[y0:y1, x0:x1] = 1
        image, wave = load_pair(frames[sample_id], audio[sample_id], runtime.metadata)
        heatmap, _, objectness = runtime.session.run(None, {"image": image[None], "audio": wave[None]})
        pred_av = normalize_img(upsample(heatmap[0], interpolation))
        pred_obj = normalize_img(upsample(objectness[0], "bilinear"))
        pred_av_obj = normalize_img(pred_av * alpha + pred_obj * (1 - alpha))
        for name, pred in (("av", pred_av), ("obj", pred_obj), ("av_obj", pred_av_obj)):
            rows[name].append(cal_ciou(pred, gt))
    summary = {}
    for name, cious in rows.items():
        cious = np.array(cious)
        success = [np.sum(cious >= 0.05 * i) / len(cious) for i in range(21)]
        summary[name] = {
            "ap50": np.mean(cious >= 0.5),
            "mean_ciou": cious.mean(),
            "auc": np.trapezoid(success, [0.05 * i for i in range(21)]),
            "cious": cious,
        }
    return summary


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_ogl_model_reports_the_three_official_rows(tmp_path, synth_dir, tiny_ogl_onnx_model, interpolation):
    from fnac.runtime import ModelRuntime

    report_path = tmp_path / "ogl.json"
    args = [
        "eval",
        "--model",
        str(tiny_ogl_onnx_model),
        "--data",
        str(synth_dir),
        "--report",
        str(report_path),
    ]
    assert main([*args, "--no-negatives", "--interpolation", interpolation]) == 0
    report = json.loads(report_path.read_text())
    expected = _official_rows(ModelRuntime(tiny_ogl_onnx_model), synth_dir, 0.4, interpolation)
    assert report["ogl_alpha"] == 0.4 and report["served_map"] == "av_obj"
    assert set(report["maps"]) == {"av", "obj", "av_obj"}
    for name, row in expected.items():
        got = report["maps"][name]
        assert got["n"] == 12
        assert got["ap50"] == pytest.approx(row["ap50"], abs=1e-12)
        assert got["mean_ciou"] == pytest.approx(row["mean_ciou"], abs=1e-9)
        assert got["auc"] == pytest.approx(row["auc"], abs=1e-9)
        per_sample = [s["maps"][name] for s in report["per_sample"]]
        np.testing.assert_allclose(per_sample, row["cious"], atol=1e-9)
    assert report["maps"]["obj"]["interpolation"] == "bilinear"
    assert report["maps"]["av"]["interpolation"] == interpolation
    # The top level is the served, fused map.
    for key in ("ap50", "mean_ciou", "auc"):
        assert report[key] == report["maps"]["av_obj"][key]
    # The maps really differ (the test would not see a swapped row otherwise).
    assert not np.allclose(expected["av"]["cious"], expected["obj"]["cious"])
    assert not np.allclose(expected["obj"]["cious"], expected["av_obj"]["cious"])


def test_checkpoint_with_ogl_weights_matches_the_ogl_export(
    tiny_checkpoint, tiny_ogl_onnx_model, resnet18_weights, synth_dir
):
    from_onnx, _, _ = evaluate(tiny_ogl_onnx_model, synth_dir, progress=False, negatives=False)
    from_ckpt, _, _ = evaluate(
        tiny_checkpoint, synth_dir, progress=False, negatives=False, ogl_weights=resnet18_weights
    )
    for name in ("av", "obj", "av_obj"):
        assert from_ckpt["maps"][name]["mean_ciou"] == pytest.approx(
            from_onnx["maps"][name]["mean_ciou"], abs=1e-4
        )
    with pytest.raises(DatasetError, match="carries its own OGL branch"):
        evaluate(tiny_ogl_onnx_model, synth_dir, progress=False, ogl_weights=resnet18_weights)


def test_a_model_without_ogl_serves_and_reports_the_av_map(tiny_onnx_model, synth_dir):
    report, scored, _ = evaluate(tiny_onnx_model, synth_dir, progress=False, negatives=False, limit=4)
    assert report["served_map"] == "av" and "maps" not in report and "ogl_alpha" not in report
    assert list(scored) == ["av"]


def test_which_calibrated_thresholds_are_worth_storing():
    from training.eval_sounding import calibration_problem

    good = {"threshold": 0.5, "tpr": 0.8, "fpr": 0.04, "target_fpr": 0.05, "method": "fpr"}
    assert calibration_problem(good) is None
    assert calibration_problem({**good, "fpr": 0.05}) is None  # at the target is within it
    assert "0.0% of real sounds" in calibration_problem({**good, "tpr": 0.0})
    assert "target 5.0%" in calibration_problem({**good, "fpr": 0.06})
    youden = {"threshold": 0.5, "tpr": 0.6, "fpr": 0.3, "method": "youden"}  # no target to miss
    assert calibration_problem(youden) is None and calibration_problem({**youden, "tpr": 0.0})


def test_providers_auto_is_the_automatic_choice(synth_dir, tiny_onnx_model):
    report, _, _ = evaluate(
        tiny_onnx_model, synth_dir, providers=["auto"], negatives=False, limit=2, progress=False
    )
    assert report["n"] == 2


def test_a_map_on_the_annotated_object_scores_and_its_mirror_image_does_not(tmp_path):
    """The toy model's map is bright where the frame is bright. With the object in the right half, a correct
    evaluation finds every sample (cIoU about 0.86); a map read transposed (object at the bottom) or flipped
    would score about 0.3 everywhere, so AP50 tells them apart."""
    from PIL import Image

    from tests.service.conftest import build_toy_model, encode_audio, frame_with_square, tone

    model = build_toy_model(tmp_path / "toy.onnx")
    data = tmp_path / "data"
    (data / "frames").mkdir(parents=True)
    (data / "audio").mkdir()
    entries = []
    for i in range(3):
        sample_id = f"s{i}"
        Image.fromarray(frame_with_square(112, 112, (64, 0, 112, 112))).save(
            data / "frames" / f"{sample_id}.jpg"
        )
        (data / "audio" / f"{sample_id}.wav").write_bytes(encode_audio(tone(3.0, 16000), 16000))
        entries.append({"file": sample_id, "class": "toy", "bbox": [[64 / 112, 0.0, 1.0, 1.0]]})
    (data / "vggss.json").write_text(json.dumps(entries))
    report, maps, _ = evaluate(model, data, negatives=False, progress=False)
    assert report["n"] == 3 and report["ap50"] == 1.0
    assert all(0.8 < c < 0.95 for c in maps["av"].cious)


def test_eval_without_matplotlib_writes_the_report_and_says_why_there_is_no_plot(
    tmp_path, synth_dir, tiny_onnx_model, monkeypatch, capsys
):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as in the serving install: import fails
    report = tmp_path / "r.json"
    args = ["eval", "--model", str(tiny_onnx_model), "--data", str(synth_dir), "--report", str(report)]
    assert main([*args, "--no-negatives", "--limit", "2"]) == 0
    assert json.loads(report.read_text())["n"] == 2 and not report.with_suffix(".png").exists()
    assert "no curve plot (matplotlib is not installed" in capsys.readouterr().out
