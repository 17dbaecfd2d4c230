"""The overlay painter's compiled inner loop (fnac/render/_blend.c) against its numpy version: the same bytes."""

from __future__ import annotations

import shutil
import sysconfig

import numpy as np
import pytest

from fnac.orientation import Orientation, upright_view
from fnac.render import painter as painter_module
from fnac.render.painter import FramePainter
from fnac.render.yuv import ColorMatrix

compiled = pytest.mark.skipif(painter_module._blend is None, reason="built without a C compiler")


def test_the_kernel_is_built_where_a_c_compiler_is():
    """`pip install` builds the kernel as an optional extension: with a compiler present (as in `make test`
    and the Docker image's build stage) it must be there, or the renderer quietly runs at half speed."""
    compiler = sysconfig.get_config_var("CC") or "cc"
    if shutil.which(compiler.split()[0]) is None:
        pytest.skip(f"no C compiler ({compiler}) here: the numpy painter is used")
    assert painter_module._blend is not None, (
        "fnac.render._blend was not built: reinstall with `pip install -e .`"
    )


def _frame_planes(rng, height, width, *, smooth: bool):
    if smooth:
        yy, xx = np.mgrid[0:height, 0:width]
        luma = ((xx * 0.7 + yy * 0.3) % 256).astype(np.uint8)
    else:
        luma = rng.integers(0, 256, (height, width), dtype=np.uint8)
    chroma = [rng.integers(0, 256, (height // 2, width // 2), dtype=np.uint8) for _ in range(2)]
    return [luma, *chroma]


def _paint_both(painter, planes, heatmap, alpha):
    numpy_out = [np.zeros_like(p) for p in planes]
    compiled_out = [np.full_like(p, 7) for p in planes]
    painter._paint_numpy(planes, numpy_out, heatmap, alpha)
    painter._paint_compiled(planes, compiled_out, heatmap, alpha)
    return numpy_out, compiled_out


@compiled
@pytest.mark.parametrize("height,width", [(720, 1280), (1280, 720), (36, 50), (2, 2), (480, 854 // 2 * 2)])
def test_compiled_painting_is_the_numpy_painting(height, width):
    rng = np.random.default_rng(height * 7 + width)
    painter = FramePainter(height, width, (7, 7), ColorMatrix(0.2126, 0.0722, False))
    planes = _frame_planes(rng, height, width, smooth=height > 100)
    for alpha in (0.5, 0.2, 0.0, 1.0):
        for heatmap in (rng.normal(size=(7, 7)) * 10, np.full((7, 7), 2.0), rng.normal(size=(7, 7)) * 1e-9):
            expected, got = _paint_both(painter, planes, heatmap, alpha)
            for k in range(3):
                np.testing.assert_array_equal(got[k], expected[k], err_msg=f"plane {k}, alpha {alpha}")


@compiled
def test_compiled_painting_reads_upright_views_and_writes_padded_planes():
    """The planes come as displayed views of a decoded frame (transposed, mirrored) and go into an encoder frame
    whose rows are padded: any strides, both ways."""
    rng = np.random.default_rng(11)
    stored = _frame_planes(rng, 64, 96, smooth=False)
    for orientation in (
        Orientation(transpose=True, flip_rows=False, flip_cols=True),
        Orientation(transpose=False, flip_rows=True, flip_cols=True),
        Orientation(transpose=True, flip_rows=True, flip_cols=False),
    ):
        planes = [upright_view(p, orientation) for p in stored]
        height, width = planes[0].shape
        painter = FramePainter(height, width, (5, 6), ColorMatrix(0.299, 0.114, True))
        heatmap = rng.normal(size=(5, 6))
        expected = [np.zeros(p.shape, np.uint8) for p in planes]
        painter._paint_numpy(planes, expected, heatmap, 0.5)
        padded = [np.zeros((p.shape[0], p.shape[1] + 32), np.uint8) for p in planes]
        targets = [array[:, : p.shape[1]] for array, p in zip(padded, planes, strict=True)]
        painter._paint_compiled(planes, targets, heatmap, 0.5)
        for k in range(3):
            np.testing.assert_array_equal(targets[k], expected[k])
            assert not padded[k][:, planes[k].shape[1] :].any()  # nothing written past a row's end


@compiled
def test_the_kernel_refuses_mismatched_arrays():
    blend = painter_module._blend
    partial = np.zeros((7, 16), np.float32)
    rows = np.zeros(8, np.int32)
    weights = np.zeros(8, np.float32)
    plane = np.zeros((8, 16), np.uint8)
    table = np.zeros(65536, np.uint8)
    blend.blend_plane(partial, rows, weights, plane, table, np.zeros((8, 16), np.uint8))  # the right shapes
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        blend.blend_plane(partial, rows, weights, plane, table, np.zeros((8, 15), np.uint8))
    with pytest.raises(ValueError, match="format"):
        blend.blend_plane(partial.astype(np.float64), rows, weights, plane, table, plane.copy())
    with pytest.raises(ValueError, match="outside partial"):
        blend.blend_plane(partial, np.full(8, 7, np.int32), weights, plane, table, plane.copy())
    with pytest.raises(ValueError, match=r"\[65536\]"):
        blend.blend_plane(partial, rows, weights, plane, table[:-1], plane.copy())
    read_only = plane.copy()
    read_only.flags.writeable = False
    with pytest.raises((ValueError, BufferError), match="read-only"):
        blend.blend_plane(partial, rows, weights, plane, table, read_only)
