"""Parsers for the annotation files of the public benchmarks (and of ``fnac synth``, which uses their layout).

- VGG-SS: ``vggss.json``, a list of ``{"file": "<youtube id>_<start s>", "class": str, "bbox": [[x0, y0, x1,
  y1], ...]}`` with coordinates normalised to [0, 1] (a few slightly outside, a dozen corrupt: clipped), and
  ``vggss_test.csv`` (one id per line).
- Flickr-SoundNet: ``flickr_test.csv`` (``<id>,<n>`` per line, CRLF in the public copies, 249 rows) and
  ``Annotations/<id>.xml`` with one ``<bbox>`` element per annotator box, in 256×256 pixel coordinates.

Coordinates are returned as stored (no scaling, no truncation): :mod:`training.metrics` turns them into the
protocol's ground-truth maps (``vggss_gt_map``, ``flickr_gt_map``).
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


@dataclass(frozen=True)
class VggssEntry:
    """One VGG-SS annotation: id, class name and normalised boxes clipped to [0, 1]."""

    file: str
    label: str
    boxes: tuple[tuple[float, float, float, float], ...]
    raw_boxes: tuple[tuple[float, ...], ...] = field(repr=False, default=())

    @property
    def clipped(self) -> bool:
        """Whether any stored coordinate lay outside [0, 1]."""
        return any(v < 0 or v > 1 for box in self.raw_boxes for v in box)


def load_vggss_json(path: str | Path) -> dict[str, VggssEntry]:
    """Load a VGG-SS style json (the real ``vggss.json`` or ``fnac synth`` output) keyed by id.

    Boxes are clipped to [0, 1] (the official loader does the same before scaling); entries keep their file
    order. Raises ``ValueError`` naming the entry when one is malformed or an id repeats.
    """
    path = Path(path)
    with path.open() as f:
        records = json.load(f)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of annotations, got {type(records).__name__}")
    entries: dict[str, VggssEntry] = {}
    for index, record in enumerate(records):
        try:
            file_id = str(record["file"])
            label = str(record.get("class", ""))
            raw = [tuple(float(v) for v in box) for box in record["bbox"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: entry {index} is not {{'file', 'class', 'bbox'}}: {exc}") from exc
        if any(len(box) != 4 for box in raw):
            raise ValueError(f"{path}: entry {index} ('{file_id}') has a box without 4 coordinates")
        if file_id in entries:
            raise ValueError(f"{path}: id '{file_id}' appears twice")
        clipped = tuple(tuple(float(v) for v in np.clip(box, 0.0, 1.0)) for box in raw)
        entries[file_id] = VggssEntry(file_id, label, clipped, tuple(raw))
    return entries


def load_id_list(path: str | Path) -> list[str]:
    """Ids from a csv/txt list: the first comma-separated field of every non-empty line (handles CRLF).

    Works for ``vggss_test.csv`` (one id per line), ``flickr_test.csv`` (``<id>,<n>``) and ``splits/*.txt``.
    """
    ids = []
    with Path(path).open(newline="") as f:
        for row in csv.reader(f):
            if row and row[0].strip():
                ids.append(row[0].strip())
    return ids


def load_flickr_test_csv(path: str | Path) -> list[tuple[str, int | None]]:
    """Rows of ``flickr_test.csv`` as ``(id, n)``; ``n`` (the second field) is None when absent."""
    rows = []
    with Path(path).open(newline="") as f:
        for row in csv.reader(f):
            if not row or not row[0].strip():
                continue
            second = row[1].strip() if len(row) > 1 else ""
            rows.append((row[0].strip(), int(second) if second else None))
    return rows


def _box_from_element(element: ET.Element, path: Path) -> tuple[int, int, int, int]:
    named = {child.tag.lower(): child.text for child in element}
    if all(key in named for key in _BOX_KEYS):
        values = [named[key] for key in _BOX_KEYS]
    else:
        # The official loader reads the children positionally and skips the first one
        # (the box's label), i.e. the last four children are xmin, ymin, xmax, ymax.
        children = list(element)
        if len(children) < 4:
            raise ValueError(
                f"{path}: a <{element.tag}> has {len(children)} children, need xmin/ymin/xmax/ymax"
            )
        values = [child.text for child in children[-4:]]
    try:
        # int(float(...)) accepts "12" and "12.0"; the official int(text) only the former.
        return tuple(int(float(v)) for v in values)  # type: ignore[return-value]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: non-numeric box coordinate in <{element.tag}>: {values}") from exc


def parse_flickr_xml(path: str | Path) -> list[tuple[int, int, int, int]]:
    """Per-annotator boxes ``(xmin, ymin, xmax, ymax)`` in 256×256 pixels from one ``Annotations/<id>.xml``.

    Every ``<bbox>`` element (or ``<bndbox>``, Pascal-VOC style) anywhere in the file is one box; coordinates
    are read by name when present, else positionally as the official loader does (children after the first).
    """
    path = Path(path)
    root = ET.parse(path).getroot()
    elements = [el for el in root.iter() if el.tag.lower() in ("bbox", "bndbox")]
    return [_box_from_element(el, path) for el in elements]


def load_flickr_annotations(
    annotation_dir: str | Path, ids: list[str] | None = None
) -> dict[str, list[tuple[int, int, int, int]]]:
    """``{id: boxes}`` for ``<annotation_dir>/<id>.xml``; all xml files when ``ids`` is None.

    Missing files for requested ids are skipped (evaluation uses the intersection and reports its size).
    """
    annotation_dir = Path(annotation_dir)
    if ids is None:
        paths = sorted(annotation_dir.glob("*.xml"))
    else:
        paths = [annotation_dir / f"{i}.xml" for i in ids]
    return {p.stem: parse_flickr_xml(p) for p in paths if p.is_file()}


def write_flickr_xml(path: str | Path, boxes_256: list[tuple[int, int, int, int]], file_id: str = "") -> Path:
    """Write boxes in the Flickr-SoundNet xml layout (used to build test fixtures and synthetic sets)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = file_id
    for box in boxes_256:
        obj = ET.SubElement(root, "object")
        bbox = ET.SubElement(obj, "bbox")
        ET.SubElement(bbox, "label").text = "sound source"
        for key, value in zip(_BOX_KEYS, box, strict=True):
            ET.SubElement(bbox, key).text = str(int(value))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def box_area_fractions(entries: dict[str, VggssEntry]) -> np.ndarray:
    """Per-sample fraction of the 224×224 protocol grid covered by the union of its boxes."""
    from training.metrics import vggss_gt_map

    return np.array([vggss_gt_map(e.boxes).mean() for e in entries.values()])


def load_synth_annotations(path: str | Path) -> dict:
    """Load ``annotations.json`` written by ``fnac synth`` (all splits, sounding + distractor boxes).

    Returns the parsed dict: ``{"classes": [...], "samples": [{"file", "split", "class", "bbox",
    "objects": [{"class", "class_index", "bbox", "sounding"}, ...]}, ...]}``.
    """
    with Path(path).open() as f:
        data = json.load(f)
    if "samples" not in data or "classes" not in data:
        raise ValueError(f"{path}: not a synth annotations.json (needs 'classes' and 'samples')")
    return data
