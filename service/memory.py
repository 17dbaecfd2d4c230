"""Keep a long-running server's resident memory flat: glibc malloc settings for the server and its decoders.

glibc gives each thread that contends for the heap an arena of its own (up to 8 per core) and, by default,
raises its mmap threshold every time a large block is freed, after which blocks of that size come from the
arenas instead of fresh mappings. The service has many threads (HTTP, decode dispatch, inference, ONNX
Runtime's pool) passing buffers of a few hundred KiB (uploads, frames, audio windows, model inputs) between
them: freed in one arena, allocated in another, the arenas fragment and RSS creeps up without any leak.
A small fixed number of arenas stops the creep. The mmap threshold is fixed too (glibc would otherwise move it
with every large free), high enough (1 MiB by default) that the per-request blocks come back from the heap:
mapping them afresh on every request cost a quarter of the server's CPU in page faults. At this threshold a
decode worker's heap still grows slowly, so the workers are recycled (`FNAC_DECODE_MAX_JOBS`,
service/decoding.py). docs/RELIABILITY.md has the measurements.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("fnac.memory")

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def tune_malloc(arena_max: int, mmap_threshold_kb: int) -> dict[str, int]:
    """Apply the settings to this process's glibc malloc (0 = leave that one alone). Call it early, before
    threads start: arenas that already exist stay. Returns what was applied ({} without glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}  # not glibc (musl, macOS): nothing to tune
    applied = {}
    if arena_max > 0 and mallopt(M_ARENA_MAX, arena_max) == 1:
        applied["arena_max"] = arena_max
    if mmap_threshold_kb > 0:
        threshold = mmap_threshold_kb * 1024
        # A fixed threshold also turns off glibc's dynamic raising of it; trimming at twice that returns
        # freed heap tops promptly.
        if mallopt(M_MMAP_THRESHOLD, threshold) == 1:
            applied["mmap_threshold_kb"] = mmap_threshold_kb
        mallopt(M_TRIM_THRESHOLD, 2 * threshold)
    return applied
