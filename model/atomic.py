"""Crash-safe file writes (standard library only, so torch-free code can use it too).

A reader — or a process restarted after a SIGKILL — sees either the old file or the complete new one, never a
partial file: data goes to a temporary file in the same folder, is fsynced, then renamed over the target.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _create_beside(path: Path) -> Path:
    """Create a new, empty temporary file next to `path` with the mode a plain `open()` gives (0666 less the
    umask, applied by the kernel: reading the umask would mean changing it, process-wide, for a moment)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; when the block succeeds, flush it to disk and rename it
    onto `path`. The file has the permissions a plain `open()` would give (mkstemp's 0600 would hide models
    from a container user). On error the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_beside(path)
    try:
        yield tmp
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files `atomic_path` leaves behind when its process is SIGKILLed mid-write.

    Only call this while nothing else writes into `folder` (e.g. when a run resumes). Returns what was removed.
    """
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
