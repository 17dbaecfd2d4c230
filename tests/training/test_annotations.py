"""Conformance of the parsers with the real public annotation files and the Flickr-SoundNet xml layout."""

from pathlib import Path

import numpy as np
import pytest

from training.annotations import (
    load_flickr_annotations,
    load_flickr_test_csv,
    load_id_list,
    load_vggss_json,
    parse_flickr_xml,
    write_flickr_xml,
)
from training.metrics import flickr_gt_map

DATA = Path(__file__).resolve().parents[1] / "data"  # the real annotation files, committed


def test_real_vggss_json_loads_with_clipping():
    entries = load_vggss_json(DATA / "vggss.json")
    assert len(entries) == 5158
    first = entries["zpWuikVorYg_000032"]
    assert first.label == "elk bugling"
    assert first.boxes == ((0.403125, 0.253125, 0.6, 0.75),)
    boxes = np.array([b for e in entries.values() for b in e.boxes])
    assert boxes.min() >= 0 and boxes.max() <= 1
    clipped = [e for e in entries.values() if e.clipped]
    assert len(clipped) == 12  # coordinates outside [0, 1] in the public file
    assert sum(len(e.boxes) for e in entries.values()) > 5158  # some samples have several boxes


def test_real_vggss_test_ids_match_json():
    ids = load_id_list(DATA / "vggss_test.csv")
    assert len(ids) == len(set(ids)) == 5158
    assert set(ids) == set(load_vggss_json(DATA / "vggss.json"))


def test_real_flickr_test_csv():
    rows = load_flickr_test_csv(DATA / "flickr_test.csv")
    assert len(rows) == 249 and len({i for i, _ in rows}) == 249
    assert rows[0] == ("10000130166", 202)
    assert all(i.isdigit() and not i.endswith("\r") for i, _ in rows)
    assert load_id_list(DATA / "flickr_test.csv") == [i for i, _ in rows]


def test_flickr_xml_roundtrip_and_positional_layout(tmp_path):
    boxes = [(10, 20, 200, 180), (0, 0, 256, 256), (30, 40, 90, 100)]
    path = write_flickr_xml(tmp_path / "Annotations" / "123.xml", boxes, "123")
    assert parse_flickr_xml(path) == boxes
    # the official loader's view: children of <bbox> read by position after the first one
    (tmp_path / "Annotations" / "456.xml").write_text(
        "<annotation><file>456</file>"
        "<object><bbox><a>x</a><b>5</b><c>6</c><d>70</d><e>80</e></bbox>"
        "<bbox><a>y</a><b>1</b><c>2</c><d>3</d><e>4</e></bbox></object></annotation>"
    )
    # Pascal-VOC style names are accepted too
    (tmp_path / "Annotations" / "789.xml").write_text(
        "<annotation><object><name>dog</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30.0</xmax>"
        "<ymax>40</ymax></bndbox></object></annotation>"
    )
    loaded = load_flickr_annotations(tmp_path / "Annotations")
    assert loaded == {"123": boxes, "456": [(5, 6, 70, 80), (1, 2, 3, 4)], "789": [(1, 2, 30, 40)]}
    assert load_flickr_annotations(tmp_path / "Annotations", ["456", "missing"]) == {"456": loaded["456"]}
    gt = flickr_gt_map(loaded["456"])
    assert gt[10, 10] == 0.5 and gt.max() == 0.5


def test_vggss_json_errors_name_the_entry(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"file": "a", "class": "x", "bbox": [[0, 0, 1]]}]')
    with pytest.raises(ValueError, match="'a'"):
        load_vggss_json(path)
    path.write_text('[{"file": "a", "class": "x", "bbox": [[0, 0, 1, 1]]}, {"file": "a", "bbox": []}]')
    with pytest.raises(ValueError, match="twice"):
        load_vggss_json(path)
