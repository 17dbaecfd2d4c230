"""Where `fnac score` writes its rows, and resuming from what a previous run left there.

- A local path with ``--format jsonl`` (the default; the local engine's only output) is one JSONL file,
  appended to item by item. Resuming reads it first (`load_existing`): ids already there are skipped, a line
  cut short by a kill is removed, and so are the lines of an item whose windows were not all written.
- ``--format parquet``, or any filesystem URI pyarrow understands (``s3://bucket/scores``, ``gs://...``,
  ``file:///...``), or a path ending in ``/``, is a folder of part files (``part-<stamp>-<n>.jsonl`` or
  ``.parquet``; ``--engine ray``). Object stores cannot append, so finished items are collected and written
  as a new part every `PART_ITEMS` items or `PART_SECONDS` seconds and at the end; a part appears whole or not
  at all (written under a temporary name and renamed on a local disk; an object store publishes an upload
  only when it is complete). A killed run loses at most the items of its unwritten part, and a rerun scores
  them again.

Resuming reads the ids already in the output (every part), so a rerun skips them; ``--retry-failed`` drops the
failed items' rows (rewriting the file, or the parts that hold them) so that those items are tried again.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from model.atomic import atomic_path
from training.score_inputs import ScoreError

log = logging.getLogger("fnac.score")

FORMATS = ("jsonl", "parquet")
PART_ITEMS = 1000
PART_SECONDS = 60.0
_PART_NAME = re.compile(r"^part-[\w.-]+\.(jsonl|parquet)$")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


# ---------------------------------------------------------------------------------------------- resuming


@dataclass
class Existing:
    """What a previous run left in OUT."""

    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    dropped_lines: int = 0  # partial, unreadable, incomplete or retried lines removed


@dataclass(frozen=True)
class _Line:
    start: int
    end: int
    id: str | None  # None: not a JSON object with a string id
    failed: bool = False
    window: int | None = None
    windows: int | None = None


def _scan_lines(path: Path) -> tuple[list[_Line], int]:
    """Every complete line of a JSONL file (byte range and what resuming needs), and the file size.

    Bytes after the last newline are a line cut short by a kill: not listed. Streams; records are not kept.
    """
    lines: list[_Line] = []
    offset = 0
    with path.open("rb") as f:
        for raw in f:
            start, offset = offset, offset + len(raw)
            if not raw.endswith(b"\n"):
                break
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                lines.append(_Line(start, offset, None))
                continue
            windows = record.get("windows")
            lines.append(
                _Line(
                    start,
                    offset,
                    record["id"],
                    failed=bool(record.get("error")),
                    window=record.get("window"),
                    windows=windows if isinstance(windows, int) else None,
                )
            )
    return lines, offset


def _item_status(lines: list[_Line]) -> str:
    """'failed', 'done' or 'incomplete' (a sweep whose windows were not all written)."""
    if any(line.failed for line in lines):
        return "failed"
    expected = lines[0].windows
    if expected is None:
        return "done"
    return "done" if len({line.window for line in lines}) >= expected else "incomplete"


def _group(lines: list[_Line]) -> dict[str, list[_Line]]:
    by_id: dict[str, list[_Line]] = {}
    for line in lines:
        if line.id is not None:
            by_id.setdefault(line.id, []).append(line)
    return by_id


def _copy_ranges(
    source: Path, target: Path, ranges: Iterable[tuple[int, int]], *, append: bool = False
) -> None:
    """Copy byte ranges of `source` into `target`: appended to an open-ended target, or as a new file written
    to a temporary name and renamed (a reader never sees a partial file)."""
    if append:
        with source.open("rb") as src, target.open("ab") as dst:
            for start, end in ranges:
                src.seek(start)
                dst.write(src.read(end - start))
        return
    with atomic_path(target) as tmp, tmp.open("wb") as dst, source.open("rb") as src:
        for start, end in ranges:
            src.seek(start)
            dst.write(src.read(end - start))


def load_existing(path: Path, *, drop_failed: bool = False) -> Existing:
    """Read OUT for resuming and repair it in place: remove a partial last line, unreadable lines, the lines of
    items whose windows are incomplete and (``drop_failed``) the lines of failed items."""
    existing = Existing()
    if not path.exists() or path.stat().st_size == 0:
        return existing
    lines, size = _scan_lines(path)
    status = {item_id: _item_status(group) for item_id, group in _group(lines).items()}
    drop = {i for i, s in status.items() if s == "incomplete" or (drop_failed and s == "failed")}
    keep = [line for line in lines if line.id is not None and line.id not in drop]
    existing.done = {i for i, s in status.items() if s == "done"}
    existing.failed = {i for i, s in status.items() if s == "failed"} - drop
    existing.dropped_lines = len(lines) - len(keep) + (size > (lines[-1].end if lines else 0))
    if keep == lines[: len(keep)]:  # only the tail goes: cut it off
        new_size = keep[-1].end if keep else 0
        if new_size != size:
            with path.open("r+b") as f:
                f.truncate(new_size)
    else:  # lines to remove in the middle (--retry-failed, a damaged line): rewrite
        _copy_ranges(path, path, [(line.start, line.end) for line in keep])
    if existing.dropped_lines:
        log.info("%s: removed %d partial, incomplete or retried line(s)", path, existing.dropped_lines)
    return existing


# ---------------------------------------------------------------------------------------------- sinks


def is_parts_folder(output: str, fmt: str) -> bool:
    """True when `output` is written as a folder of parts rather than one JSONL file."""
    return fmt == "parquet" or bool(_URI.match(output)) or output.endswith("/") or Path(output).is_dir()


def open_sink(output: str, fmt: str = "jsonl", *, retry_failed: bool = False):
    """The sink for `output` (a `JsonlFile` or a `PartsFolder`), with what a previous run left read from it."""
    if fmt not in FORMATS:
        raise ScoreError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if is_parts_folder(output, fmt):
        return PartsFolder(output, fmt, retry_failed=retry_failed)
    return JsonlFile(Path(output), retry_failed=retry_failed)


def _jsonl(lines: list[dict]) -> str:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


class JsonlFile:
    """One local JSONL file, the local engine's format: each item's lines appended in one flushed write."""

    def __init__(self, path: Path, *, retry_failed: bool = False):
        self.path = path
        self.label = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.existing = load_existing(path, drop_failed=retry_failed)
        self._file = path.open("a", encoding="utf-8")

    def write(self, lines: list[dict]) -> None:
        self._file.write(_jsonl(lines))
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PartsFolder:
    """A folder of part files on any pyarrow filesystem, each part written whole."""

    def __init__(
        self,
        output: str,
        fmt: str,
        *,
        retry_failed: bool = False,
        part_items: int = PART_ITEMS,
        part_seconds: float = PART_SECONDS,
    ):
        from pyarrow import fs as pafs

        self.fmt = fmt
        self.label = output
        try:
            if _URI.match(output):
                self.fs, root = pafs.FileSystem.from_uri(output)
            else:
                self.fs, root = pafs.LocalFileSystem(), str(Path(output).resolve())
        except Exception as exc:  # unknown scheme, missing credentials, unreachable endpoint...
            raise ScoreError(f"cannot open output {output!r}: {exc}") from None
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.fs.create_dir(self.root, recursive=True)
        self._part_items, self._part_seconds = part_items, part_seconds
        self._stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
        self._count = 0
        self._pending: list[dict] = []
        self._pending_items = 0
        self._since = time.monotonic()
        self.existing = self._read_existing(retry_failed)

    # ------------------------------------------------------------------------------------------- reading

    def parts(self) -> list[str]:
        """Paths of the finished part files, in name order."""
        from pyarrow import fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        names = [i.path for i in infos if i.type == pafs.FileType.File and _PART_NAME.match(i.base_name)]
        return sorted(names)

    def read_part(self, path: str) -> list[dict]:
        """Every row of one part, as dicts."""
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            with self.fs.open_input_file(path) as f:
                return pq.read_table(f).to_pylist()
        with self.fs.open_input_stream(path) as f:
            return [json.loads(line) for line in io.TextIOWrapper(f, encoding="utf-8") if line.strip()]

    def _read_existing(self, retry_failed: bool) -> Existing:
        existing = Existing()
        by_id: dict[str, list[_Line]] = {}
        failed_parts: set[str] = set()
        for part in self.parts():
            for row in self.read_part(part):
                failed = bool(row.get("error"))
                by_id.setdefault(row["id"], []).append(
                    _Line(
                        0, 0, row["id"], failed=failed, window=row.get("window"), windows=row.get("windows")
                    )
                )
                if failed:
                    failed_parts.add(part)
        status = {item_id: _item_status(lines) for item_id, lines in by_id.items()}
        existing.done = {i for i, s in status.items() if s == "done"}
        existing.failed = {i for i, s in status.items() if s == "failed"}
        if retry_failed and existing.failed:
            # Parts are immutable: rewrite each part holding failures without them, then drop the old one.
            for part in sorted(failed_parts):
                rows = self.read_part(part)
                kept = [row for row in rows if row["id"] not in existing.failed]
                existing.dropped_lines += len(rows) - len(kept)
                if kept:
                    self._write_part(kept)
                self.fs.delete_file(part)
            existing.failed = set()
        return existing

    # ------------------------------------------------------------------------------------------- writing

    def write(self, lines: list[dict]) -> None:
        """Collect one item's lines; a part is written every `part_items` items or `part_seconds` seconds."""
        self._pending += lines
        self._pending_items += 1
        if self._pending_items >= self._part_items or time.monotonic() - self._since >= self._part_seconds:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._write_part(self._pending)
        self._pending, self._pending_items, self._since = [], 0, time.monotonic()

    def _write_part(self, rows: list[dict]) -> None:
        self._count += 1
        name = f"{self.root}/part-{self._stamp}-{self._count:05d}.{self.fmt}"
        data = _parquet_bytes(rows) if self.fmt == "parquet" else _jsonl(rows).encode("utf-8")
        if self.local:
            # A temporary name first: a reader (or a resuming run) never sees half a part.
            tmp = f"{self.root}/.{os.path.basename(name)}.tmp"
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, name)
        else:
            with self.fs.open_output_stream(name) as f:
                f.write(data)

    def close(self) -> None:
        self.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _parquet_bytes(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=parquet_schema(rows))
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue().to_pybytes()


def parquet_schema(rows: list[dict]):
    """The Parquet schema of score rows: fixed types for the known fields (so parts written by different runs,
    or holding only failures, agree); any other field a row carries gets the type pyarrow infers for it."""
    import pyarrow as pa

    box = pa.struct(
        [
            ("x0", pa.int32()),
            ("y0", pa.int32()),
            ("x1", pa.int32()),
            ("y1", pa.int32()),
            ("score", pa.float64()),
        ]
    )
    known = {
        "id": pa.string(),
        "source": pa.struct([("video", pa.string()), ("image", pa.string()), ("audio", pa.string())]),
        "time": pa.float64(),
        "window": pa.int32(),
        "windows": pa.int32(),
        "width": pa.int32(),
        "height": pa.int32(),
        "score": pa.float64(),
        "sounding": pa.bool_(),
        "audio_level_dbfs": pa.float64(),
        "boxes": pa.list_(box),
        "heatmap": pa.list_(pa.list_(pa.float64())),
        "png": pa.string(),
        "video": pa.string(),
        "model": pa.struct([("name", pa.string()), ("sha256", pa.string())]),
        "error": pa.struct([("code", pa.string()), ("message", pa.string())]),
    }
    names: list[str] = []
    for row in rows:
        names += [name for name in row if name not in names]
    fields = []
    for name in names:
        if name in known:
            fields.append((name, known[name]))
        else:
            inferred = pa.Table.from_pylist([{name: row.get(name)} for row in rows]).schema.field(name).type
            fields.append((name, inferred))
    return pa.schema(fields)
