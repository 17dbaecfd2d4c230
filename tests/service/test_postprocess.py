import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage  # test-only: an independent connected-components implementation

from fnac import postprocess, render


def test_upsample_keeps_values_and_size():
    heatmap = np.arange(49, dtype=np.float32).reshape(7, 7)
    up = postprocess.upsample(heatmap, 70, 140)
    assert up.shape == (70, 140) and up.dtype == np.float32
    # Pixel-centre aligned bilinear: the centre of each 10x20 cell carries that cell's value.
    assert up[35, 70] == pytest.approx(heatmap[3, 3], abs=0.6)
    assert up.min() >= heatmap.min() - 1e-4 and up.max() <= heatmap.max() + 1e-4


def test_normalize_min_max_and_constant_map():
    norm = postprocess.normalize(np.array([[2.0, 4.0], [6.0, 10.0]], np.float32))
    np.testing.assert_allclose(norm, [[0.0, 0.25], [0.5, 1.0]])
    assert not postprocess.normalize(np.full((3, 3), 5.0, np.float32)).any()


def _reference_boxes(normalized, raw, threshold, min_area):
    labels, _ = ndimage.label(normalized >= threshold, structure=np.ones((3, 3)))
    boxes = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        inside = labels == index
        if inside.sum() < min_area * normalized.size:
            continue
        boxes.append(
            (region[1].start, region[0].start, region[1].stop, region[0].stop, float(raw[inside].max()))
        )
    return sorted(boxes, key=lambda b: b[4], reverse=True)


@pytest.mark.parametrize("seed", range(6))
def test_find_boxes_matches_scipy_labelling(seed):
    rng = np.random.default_rng(seed)
    raw = postprocess.upsample(rng.normal(size=(7, 7)).astype(np.float32), 90, 120)
    normalized = postprocess.normalize(raw)
    boxes = postprocess.find_boxes(normalized, raw, threshold=0.55, min_area=0.01, max_boxes=100)
    expected = _reference_boxes(normalized, raw, 0.55, 0.01)
    assert len(boxes) == len(expected) > 0
    for box, (x0, y0, x1, y1, score) in zip(boxes, expected, strict=True):
        assert (box.x0, box.y0, box.x1, box.y1) == (x0, y0, x1, y1)
        assert box.score == pytest.approx(score)


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6])
def test_find_boxes_matches_scipy_on_noisy_masks(density):
    # Speckled masks: hundreds of components, runs that merge and split from row to row, diagonal contacts,
    # regions that are U-shaped or touch the frame edges.
    rng = np.random.default_rng(int(density * 100))
    raw = rng.random((60, 83)).astype(np.float32)
    normalized = (rng.random(raw.shape) < density).astype(np.float32)
    boxes = postprocess.find_boxes(normalized, raw, threshold=0.5, min_area=0.0, max_boxes=10_000)
    expected = _reference_boxes(normalized, raw, 0.5, 0.0)
    assert len(boxes) == len(expected) > 5
    got = sorted((b.x0, b.y0, b.x1, b.y1, round(b.score, 6)) for b in boxes)
    assert got == sorted((x0, y0, x1, y1, round(score, 6)) for x0, y0, x1, y1, score in expected)


def test_find_boxes_follows_a_spiral_as_one_component():
    mask = np.zeros((21, 21), np.float32)
    top, left, bottom, right = 0, 0, 20, 20
    while top <= bottom and left <= right:  # a square spiral of 1-pixel walls, gaps of 1 pixel
        mask[top, left : right + 1] = 1
        mask[top : bottom + 1, right] = 1
        mask[bottom, left : right + 1] = 1
        mask[top + 2 : bottom + 1, left] = 1
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
        if top <= bottom:
            mask[top, left - 1] = 1  # the bridge into the next turn
    assert len(_reference_boxes(mask, mask, 0.5, 0.0)) == 1
    boxes = postprocess.find_boxes(mask, mask, threshold=0.5, min_area=0.0)
    assert [(b.x0, b.y0, b.x1, b.y1) for b in boxes] == [(0, 0, 21, 21)]


def test_find_boxes_joins_diagonal_neighbours_and_filters_small_regions():
    mask = np.zeros((10, 10), np.float32)
    mask[2, 2] = mask[3, 3] = mask[4, 4] = 1.0  # one diagonal component of 3 pixels
    mask[8, 0] = 1.0  # a single pixel, below min_area
    boxes = postprocess.find_boxes(mask, mask, threshold=0.5, min_area=0.02)
    assert [(b.x0, b.y0, b.x1, b.y1) for b in boxes] == [(2, 2, 5, 5)]


def test_localize_puts_the_box_on_the_hot_cell_in_frame_pixels():
    heatmap = np.full((7, 7), -10.0, np.float32)
    heatmap[1, 5] = 30.0  # row 1, column 5 of a 7x7 grid
    located = postprocess.localize(heatmap, (210, 350), tau=0.03)  # cells are 30 x 50 pixels
    assert located.upsampled.shape == located.normalized.shape == (210, 350)
    [box] = located.boxes
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    assert abs(cx - 5.5 * 50) < 3 and abs(cy - 1.5 * 30) < 3
    assert box.x1 - box.x0 < 2 * 50 and box.y1 - box.y0 < 2 * 30
    # Even-sized cells: the best pixel sits half a pixel off the cell centre in x and y; bilinear weights
    # of the hot cell there are (1 - 0.5/50) and (1 - 0.5/30); then x tau.
    assert box.score == pytest.approx((-10.0 + 40.0 * (1 - 0.5 / 50) * (1 - 0.5 / 30)) * 0.03, abs=1e-4)


def test_localize_flat_map_has_no_boxes():
    assert postprocess.localize(np.zeros((7, 7), np.float32), (50, 50), tau=0.03).boxes == []


def test_pngs_have_the_frame_size():
    frame = np.full((60, 80, 3), 40, np.uint8)
    heatmap = np.zeros((7, 7), np.float32)
    heatmap[3, 3] = 1.0
    located = postprocess.localize(heatmap, (60, 80), tau=0.03)

    bare = Image.open(io.BytesIO(postprocess.heatmap_png(located.normalized)))
    assert bare.mode == "L" and bare.size == (80, 60)
    np.testing.assert_array_equal(np.asarray(bare), np.rint(located.normalized * 255).astype(np.uint8))

    overlay = np.asarray(Image.open(io.BytesIO(render.overlay_png(frame, located.normalized, located.boxes))))
    assert overlay.shape == (60, 80, 3)
    box = located.boxes[0]
    assert tuple(overlay[box.y0, (box.x0 + box.x1) // 2]) == render.BOX_COLOR  # the rectangle is drawn
    assert overlay[30, 40, 0] > overlay[2, 2, 0]  # hot (red) in the middle, cold (blue) in the corner
    assert overlay[2, 2, 2] > overlay[2, 2, 0]


def test_audio_level_in_dbfs():
    t = np.arange(16000) / 16000
    assert postprocess.audio_level_dbfs(np.sin(2 * np.pi * 440 * t)) == pytest.approx(-3.0103, abs=1e-3)
    assert postprocess.audio_level_dbfs(np.full(100, 0.01)) == pytest.approx(-40.0)
    assert postprocess.audio_level_dbfs(np.zeros(100)) == postprocess.LEVEL_FLOOR_DBFS
    assert postprocess.audio_level_dbfs(np.zeros(0)) == postprocess.LEVEL_FLOOR_DBFS


def test_sounding_needs_both_the_score_and_some_audio():
    assert postprocess.is_sounding(0.9, -20.0, threshold=0.8)
    assert postprocess.is_sounding(0.8, -20.0, threshold=0.8)  # a score at the threshold passes it
    assert not postprocess.is_sounding(0.7, -20.0, threshold=0.8)  # the network says no
    assert not postprocess.is_sounding(0.9, -120.0, threshold=0.8)  # digital silence: nothing to hear
    assert not postprocess.is_sounding(0.9, -60.0, threshold=0.8)  # at the silence level itself
    assert postprocess.is_sounding(0.9, -59.9, threshold=0.8)
    assert postprocess.is_sounding(0.9, -70.0, threshold=0.8, silence_dbfs=-80.0)
