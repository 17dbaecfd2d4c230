/* The overlay painter's inner loop, compiled: upsample the map along the rows and blend it into one plane.
 *
 * fnac/render/painter.py holds the rules and a numpy version of this loop (FramePainter.paint with no
 * compiled kernel); this file does the same arithmetic in one pass over the frame instead of six, with the
 * same float32 operations in the same order, so both give the same bytes (tests/fnac/test_blend_kernel.py).
 *
 * blend_plane(partial, rows, weights, plane, table, out):
 *   partial  float32 [h, W], C-contiguous: the small map already upsampled along the columns
 *   rows     int32 [H]: the source row j of each output row
 *   weights  float32 [H]: the weight of source row j + 1 (unused where j is the last row)
 *   plane    uint8 [H, W], any strides: the frame's plane as displayed (read)
 *   table    uint8 [65536], C-contiguous: the blend table, indexed by (map value << 8) | pixel
 *   out      uint8 [H, W], any strides, writable: the painted plane
 * Per pixel: v = partial[j] + weight * (partial[j + 1] - partial[j]) in float32, clipped to [0, 255.5] and
 * truncated (the map value, already offset by + 0.5 so that truncation rounds), then out = table[v << 8 | pixel].
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static int get_buffer(PyObject *obj, Py_buffer *view, int flags, int ndim, Py_ssize_t itemsize, const char *format,
                      const char *name) {
    if (PyObject_GetBuffer(obj, view, flags | PyBUF_FORMAT) < 0) return -1;
    const char *got = view->format ? view->format : "B";
    if (view->ndim != ndim || view->itemsize != itemsize || strcmp(got, format) != 0) {
        PyErr_Format(PyExc_ValueError, "blend_plane: %s must be %d-D with format '%s' (got %d-D, '%s')", name,
                     ndim, format, view->ndim, got);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* The map value v (already + 0.5) clipped to [0, 255.5], truncated, shifted to its row of the table. */
static inline uint16_t map_offset(float v) {
    v = v < 0.0f ? 0.0f : (v > 255.5f ? 255.5f : v);
    return (uint16_t)((uint16_t)v << 8);
}

static PyObject *blend_plane(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *partial_obj, *rows_obj, *weights_obj, *plane_obj, *table_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOOOOO:blend_plane", &partial_obj, &rows_obj, &weights_obj, &plane_obj,
                          &table_obj, &out_obj))
        return NULL;
    Py_buffer partial, rows, weights, plane, table, out;
    if (get_buffer(partial_obj, &partial, PyBUF_C_CONTIGUOUS, 2, 4, "f", "partial") < 0) return NULL;
    if (get_buffer(rows_obj, &rows, PyBUF_C_CONTIGUOUS, 1, 4, "i", "rows") < 0) goto fail_partial;
    if (get_buffer(weights_obj, &weights, PyBUF_C_CONTIGUOUS, 1, 4, "f", "weights") < 0) goto fail_rows;
    if (get_buffer(plane_obj, &plane, PyBUF_STRIDED_RO, 2, 1, "B", "plane") < 0) goto fail_weights;
    if (get_buffer(table_obj, &table, PyBUF_C_CONTIGUOUS, 1, 1, "B", "table") < 0) goto fail_plane;
    if (get_buffer(out_obj, &out, PyBUF_STRIDED | PyBUF_WRITABLE, 2, 1, "B", "out") < 0) goto fail_table;

    const Py_ssize_t h = partial.shape[0], width = partial.shape[1];
    const Py_ssize_t height = out.shape[0];
    if (plane.shape[0] != height || plane.shape[1] != width || out.shape[1] != width || rows.shape[0] != height ||
        weights.shape[0] != height || table.shape[0] != 65536 || h < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "blend_plane: plane and out must be [H, W], partial [h, W], rows and weights [H], "
                        "table [65536]");
        goto fail_all;
    }
    const int32_t *row_of = (const int32_t *)rows.buf;
    for (Py_ssize_t y = 0; y < height; y++) {
        if (row_of[y] < 0 || row_of[y] >= h) {
            PyErr_SetString(PyExc_ValueError, "blend_plane: a source row is outside partial");
            goto fail_all;
        }
    }

    uint16_t *restrict offsets = PyMem_RawMalloc(width * sizeof(uint16_t));  /* one row's map values << 8 */
    if (offsets == NULL) {
        PyErr_NoMemory();
        goto fail_all;
    }
    Py_BEGIN_ALLOW_THREADS;
    const float *values = (const float *)partial.buf;
    const float *weight_of = (const float *)weights.buf;
    const uint8_t *restrict lut = (const uint8_t *)table.buf;
    const Py_ssize_t in_row = plane.strides[0], in_col = plane.strides[1];
    const Py_ssize_t out_row = out.strides[0], out_col = out.strides[1];
    for (Py_ssize_t y = 0; y < height; y++) {
        const int32_t j = row_of[y];
        const float *low = values + j * width;
        if (j + 1 < h) {
            const float *high = low + width;
            const float w = weight_of[y];
            for (Py_ssize_t x = 0; x < width; x++) {
                const float step = high[x] - low[x];
                const float share = w * step;
                offsets[x] = map_offset(low[x] + share);
            }
        } else {
            for (Py_ssize_t x = 0; x < width; x++) offsets[x] = map_offset(low[x]);
        }
        const uint8_t *restrict src = (const uint8_t *)plane.buf + y * in_row;
        uint8_t *restrict dst = (uint8_t *)out.buf + y * out_row;
        if (in_col == 1 && out_col == 1) {
            for (Py_ssize_t x = 0; x < width; x++) dst[x] = lut[offsets[x] | src[x]];
        } else {
            for (Py_ssize_t x = 0; x < width; x++) dst[x * out_col] = lut[offsets[x] | src[x * in_col]];
        }
    }
    Py_END_ALLOW_THREADS;
    PyMem_RawFree(offsets);

    PyBuffer_Release(&out);
    PyBuffer_Release(&table);
    PyBuffer_Release(&plane);
    PyBuffer_Release(&weights);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&partial);
    Py_RETURN_NONE;

fail_all:
    PyBuffer_Release(&out);
fail_table:
    PyBuffer_Release(&table);
fail_plane:
    PyBuffer_Release(&plane);
fail_weights:
    PyBuffer_Release(&weights);
fail_rows:
    PyBuffer_Release(&rows);
fail_partial:
    PyBuffer_Release(&partial);
    return NULL;
}

static PyMethodDef methods[] = {
    {"blend_plane", blend_plane, METH_VARARGS,
     "blend_plane(partial, rows, weights, plane, table, out): upsample the map along the rows and blend it into "
     "one plane (see fnac/render/painter.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "fnac.render._blend", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__blend(void) { return PyModule_Create(&module); }
