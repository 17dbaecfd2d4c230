"""The evaluation protocol against independent, differently written computations and hand-checkable cases."""

import numpy as np
import pytest

from training import metrics
from training.metrics import (
    Evaluator,
    auc_from_cious,
    auroc,
    box_prior,
    calibrate_sounding_threshold,
    centre_prior,
    ciou,
    flickr_gt_map,
    median_threshold,
    minmax_normalize,
    predicted_mask,
    sample_ciou,
    summarize_cious,
    upsample_heatmap,
    vggss_gt_map,
)

SIZE = 224


def ciou_by_pixel_sets(heatmap: np.ndarray, gt: np.ndarray) -> float:
    """Independent cIoU: pixel coordinate sets and a Python loop, threshold from a sorted Python list."""
    values = sorted(float(v) for v in heatmap.ravel())
    threshold = values[(heatmap.shape[0] * heatmap.shape[1]) // 2]
    predicted = {
        (y, x) for y in range(heatmap.shape[0]) for x in range(heatmap.shape[1]) if heatmap[y, x] >= threshold
    }
    numerator = sum(gt[y, x] for (y, x) in predicted)
    outside = sum(1 for (y, x) in predicted if gt[y, x] == 0)
    return float(numerator / (gt.sum() + outside))


def gt_by_loops(boxes, size=SIZE):
    gt = np.zeros((size, size))
    for box in boxes:
        x0, y0, x1, y1 = (int(min(max(v, 0.0), 1.0) * size) for v in box)
        for y in range(y0, y1):
            for x in range(x0, x1):
                gt[y, x] = 1
    return gt


def test_threshold_is_sorted_value_at_half_index():
    heatmap = np.random.default_rng(0).permutation(SIZE * SIZE).reshape(SIZE, SIZE).astype(np.float64)
    assert median_threshold(heatmap) == SIZE * SIZE // 2 == 25088
    mask = predicted_mask(heatmap)
    assert mask.sum() == SIZE * SIZE - 25088  # values 25088 .. 50175 are ≥ t
    # odd sizes: index ⌊h·w/2⌋
    assert median_threshold(np.arange(15.0).reshape(3, 5)) == 7.0


def test_perfect_half_image_mask_scores_one():
    gt = np.zeros((SIZE, SIZE))
    gt[:, :112] = 1  # exactly half: the median threshold reproduces it from a binary map
    assert ciou(predicted_mask(gt), gt) == 1.0
    assert sample_ciou(gt, gt) == 1.0


def test_small_box_perfectly_localized_scores_twice_its_area():
    # A smooth map peaked on the box: the median threshold still predicts half the image, so cIoU = 2·area.
    box = [0.25, 0.25, 0.75, 0.5]  # 112 × 56 px = 1/8 of the image
    gt = vggss_gt_map([box])
    value = sample_ciou(box_prior([box]), gt)
    assert value == pytest.approx(2 * gt.mean(), abs=2e-3)


def test_ciou_matches_pixel_set_computation_on_random_maps():
    rng = np.random.default_rng(1)
    for trial in range(3):
        heatmap = minmax_normalize(rng.normal(size=(SIZE, SIZE)).cumsum(axis=0))
        boxes = [sorted(rng.uniform(-0.1, 1.1, 2)) for _ in range(2)]
        box_list = [[bx[0], by[0], bx[1], by[1]] for bx, by in zip(boxes, boxes[::-1], strict=True)]
        gt = vggss_gt_map(box_list) if trial < 2 else flickr_gt_map([[10, 20, 200, 180], [50, 0, 256, 100]])
        expected = ciou_by_pixel_sets(heatmap, gt)
        assert ciou(predicted_mask(heatmap), gt) == pytest.approx(expected, abs=1e-12)


def test_vggss_gt_map_slicing_and_clipping_against_loops():
    boxes = [[0.1, 0.2, 0.5, 0.6], [-0.05, 0.9, 0.3, 1.2], [0.7, 0.1, 0.65, 0.3]]  # outside [0,1]; x1 < x0
    gt = vggss_gt_map(boxes)
    np.testing.assert_array_equal(gt, gt_by_loops(boxes))
    # first box: rows int(0.2·224)=44 … int(0.6·224)=134 (exclusive), cols 22 … 112
    assert gt[44, 22] == 1 and gt[133, 111] == 1 and gt[134, 50] == 0 and gt[50, 112] == 0 and gt[43, 30] == 0
    assert set(np.unique(gt)) == {0.0, 1.0}


def test_flickr_consensus_half_cells():
    # Two annotators overlap on a region; one annotator alone covers the rest of its box; a third box far away.
    boxes = [[0, 0, 128, 128], [64, 64, 192, 192], [224, 224, 256, 256]]
    gt = flickr_gt_map(boxes)
    # coordinates scale by 224/256 and truncate: 64 → 56, 128 → 112, 192 → 168, 224 → 196
    assert gt[60, 60] == 1.0  # both of the first two boxes
    assert gt[10, 10] == 0.5  # only the first
    assert gt[150, 150] == 0.5  # only the second
    assert gt[200, 200] == 0.5  # only the third
    assert gt[10, 200] == 0.0
    assert gt[55, 55] == 0.5 and gt[56, 56] == 1.0 and gt[111, 111] == 1.0 and gt[112, 112] == 0.5
    # three overlapping annotators still clip to 1
    assert flickr_gt_map([[0, 0, 256, 256]] * 3).max() == 1.0
    # predicting everything annotated scores 1; predicting only the agreed cells misses the 0.5 mass
    assert ciou((gt > 0).astype(float), gt) == 1.0
    agreed = (gt == 1).astype(float)
    assert ciou(agreed, gt) == pytest.approx(agreed.sum() / gt.sum())
    assert agreed.sum() == 56 * 56 and gt.sum() == 56 * 56 + 0.5 * (2 * (112 * 112 - 56 * 56) + 28 * 28)


def test_empty_ground_truth_scores_zero():
    heatmap = np.random.default_rng(2).random((SIZE, SIZE))
    assert ciou(predicted_mask(heatmap), np.zeros((SIZE, SIZE))) == 0.0


def test_constant_map_is_left_unnormalised_and_predicts_everything():
    constant = np.full((SIZE, SIZE), 3.0)
    np.testing.assert_array_equal(minmax_normalize(constant), constant)
    assert predicted_mask(constant).all()


def test_auc_on_known_list():
    cious = [0.0, 0.5, 1.0]
    # fraction ≥ t: 1 at t=0; 2/3 for 0 < t ≤ 0.5; 1/3 for 0.5 < t ≤ 1
    expected = 0.05 * ((1 + 2 / 3) / 2 + 9 * (2 / 3) + (2 / 3 + 1 / 3) / 2 + 9 * (1 / 3))
    assert auc_from_cious(cious) == pytest.approx(expected, abs=1e-12)
    x = [0.05 * i for i in range(21)]
    y = [sum(c >= t for c in cious) / 3 for t in x]
    assert auc_from_cious(cious) == pytest.approx(np.trapezoid(y, x), abs=1e-12)
    summary = summarize_cious(cious)
    assert summary["ap50"] == pytest.approx(2 / 3) and summary["mean_ciou"] == pytest.approx(0.5)
    assert summary["n"] == 3
    assert auc_from_cious([1.0] * 5) == pytest.approx(1.0)
    assert auc_from_cious([0.0] * 5) == pytest.approx(0.05 / 2)  # only the t=0 point counts


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("shape", [(7, 7), (5, 9), (1, 1), (14, 14)])
def test_upsampling_matches_torch_interpolate(mode, shape):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    heatmap = (np.random.default_rng(3).normal(size=shape) * 10).astype(np.float32)
    reference = F.interpolate(
        torch.from_numpy(heatmap)[None, None], size=(SIZE, SIZE), mode=mode, align_corners=mode == "bilinear"
    )[0, 0].numpy()
    ours = upsample_heatmap(heatmap, SIZE, mode, backend="numpy")
    assert ours.dtype == np.float32 and ours.shape == (SIZE, SIZE)
    scale = max(np.ptp(reference), np.abs(reference).max())
    np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-6 * scale)
    np.testing.assert_array_equal(upsample_heatmap(heatmap, SIZE, mode, backend="torch"), reference)


def test_bilinear_align_corners_hits_the_corners_and_bicubic_overshoots():
    heatmap = np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32)
    up = upsample_heatmap(heatmap, 224, "bilinear", backend="numpy")
    assert up[0, 0] == 0 and up[0, -1] == 1 and up[-1, 0] == 2 and up[-1, -1] == 3
    cubic = upsample_heatmap(np.eye(3, dtype=np.float32), 224, "bicubic", backend="numpy")
    assert cubic.min() < 0  # Keys kernel with A = -0.75 rings


def test_evaluator_agrees_between_backends_and_writes_plot(tmp_path):
    pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    by_backend = {}
    for backend in ("numpy", "torch"):
        ev = Evaluator(interpolation="bicubic", backend=backend)
        rng = np.random.default_rng(4)
        for i in range(20):
            box = np.sort(rng.uniform(0, 1, 4).reshape(2, 2), axis=1).T.ravel()[[0, 2, 1, 3]]
            ev.add(rng.normal(size=(7, 7)), vggss_gt_map([box]), sample_id=f"s{i}")
        by_backend[backend] = ev
    a, b = by_backend["numpy"].summary(), by_backend["torch"].summary()
    assert a["ap50"] == b["ap50"] and a["n"] == b["n"] == 20
    assert a["mean_ciou"] == pytest.approx(b["mean_ciou"], abs=1e-4)
    assert set(a) >= {"ap50", "mean_ciou", "auc", "n", "interpolation"} and a["interpolation"] == "bicubic"
    path = by_backend["numpy"].write_success_plot(tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert by_backend["numpy"].per_sample()[3]["id"] == "s3"


def test_evaluator_rejects_unknown_interpolation():
    with pytest.raises(ValueError, match="interpolation"):
        Evaluator(interpolation="nearest")


def test_centre_priors_select_the_central_half():
    for kind in ("gaussian", "box"):
        mask = predicted_mask(centre_prior(SIZE, kind))
        assert mask.mean() == pytest.approx(0.5, abs=0.02)  # ties on the discrete level set
        assert mask[112, 112] == 1 and mask[0, 0] == 0
    square = predicted_mask(centre_prior(SIZE, "box"))
    side = int(square[112].sum())
    assert abs(side - SIZE / np.sqrt(2)) <= 2


def test_box_prior_mask_contains_the_box():
    box = [0.6, 0.1, 0.9, 0.4]
    mask = predicted_mask(box_prior([box]))
    gt = vggss_gt_map([box])
    assert (mask[gt == 1] == 1).all()


def auroc_by_pairs(pos, neg):
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


def test_auroc_known_values_and_ties():
    assert auroc([1, 2, 3], [0, 2]) == pytest.approx(0.75)
    assert auroc([1, 1], [1, 1]) == pytest.approx(0.5)
    assert auroc([2, 3], [0, 1]) == 1.0 and auroc([0, 1], [2, 3]) == 0.0
    rng = np.random.default_rng(5)
    pos = np.round(rng.normal(1, 1, 60), 1)  # rounding makes ties
    neg = np.round(rng.normal(0, 1, 45), 1)
    assert auroc(pos, neg) == pytest.approx(auroc_by_pairs(pos, neg), abs=1e-12)
    assert np.isnan(auroc([], [1.0]))


def test_sounding_threshold_calibration():
    pos, neg = [0.5, 0.6, 0.7, 0.8], [0.1, 0.2, 0.3]
    result = calibrate_sounding_threshold(pos, neg)
    assert 0.3 < result["threshold"] < 0.5 and result["tpr"] == 1.0 and result["fpr"] == 0.0
    rng = np.random.default_rng(6)
    pos, neg = rng.normal(1, 1, 500), rng.normal(0, 1, 500)
    at_fpr = calibrate_sounding_threshold(pos, neg, method="fpr", target_fpr=0.1)
    assert at_fpr["fpr"] <= 0.1 and np.mean(neg >= at_fpr["threshold"]) == at_fpr["fpr"]
    youden = calibrate_sounding_threshold(pos, neg)
    assert youden["tpr"] - youden["fpr"] >= at_fpr["tpr"] - at_fpr["fpr"] - 1e-12
    with pytest.raises(ValueError):
        calibrate_sounding_threshold([], [1.0])


def test_sounding_threshold_holds_the_target_for_every_negative_kind():
    """Pooled, an easy kind dilutes a hard one: 10 % of noise may pass at a pooled 5 %. Per kind it may not."""
    rng = np.random.default_rng(7)
    pos = rng.normal(1.0, 0.3, 400)
    kinds = {"offscreen": rng.normal(-1.0, 0.3, 400), "noise": rng.normal(0.5, 0.3, 400)}
    pooled = calibrate_sounding_threshold(pos, np.concatenate(list(kinds.values())), method="fpr")
    per_kind = calibrate_sounding_threshold(pos, kinds, method="fpr")
    assert np.mean(kinds["noise"] >= pooled["threshold"]) > 0.08  # the pooled rule lets noise through
    worst = max(np.mean(scores >= per_kind["threshold"]) for scores in kinds.values())
    assert worst <= 0.05 and per_kind["fpr"] == worst
    assert per_kind["fpr_by_kind"]["noise"] == worst and per_kind["fpr_by_kind"]["offscreen"] == 0.0
    # the lowest such threshold: one observed score lower and noise would pass more than 5 %
    below = np.sort(np.concatenate([pos, *kinds.values()]))
    below = below[below < per_kind["threshold"]].max()
    assert np.mean(kinds["noise"] >= below) > 0.05
    assert per_kind["tpr"] < pooled["tpr"]  # the price, in recall
    # kinds with no scores are ignored; a single kind behaves like the pooled rule
    same = calibrate_sounding_threshold(pos, {"noise": kinds["noise"], "silence": []}, method="fpr")
    assert same["threshold"] == calibrate_sounding_threshold(pos, kinds["noise"], method="fpr")["threshold"]


def test_report_writer_turns_nan_into_null(tmp_path):
    path = metrics.write_report(tmp_path / "r.json", {"ap50": float("nan"), "n": np.int64(0)})
    assert path.read_text().replace(" ", "").replace("\n", "") == '{"ap50":null,"n":0}'
