"""`fnac score --engine ray`: the same rows as the local engine, on an embedded and a two-node Ray cluster.

Ray binds to the machine's network address, so every Ray run here happens in a private network namespace with
only loopback up (`unshare -n`, root). The output writers (`training.score_output`) are tested without Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.training.test_score import RATE, _frame, write_clip, write_wav
from training.score_local import score_items
from training.score_output import PartsFolder, open_sink

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, check=False
    )
    return probe.returncode == 0


needs_ray = pytest.mark.skipif(
    not (_namespaces_work() and (BIN / "ray").exists()),
    reason="needs Ray (the scale extra) and unshare -n (root) to keep Ray on loopback",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Six short clips, two frame + audio pairs (a dataset dir) and a broken .mp4."""
    root = tmp_path_factory.mktemp("ray_corpus")
    videos, data = root / "videos", root / "data"
    videos.mkdir()
    for seed in range(6):
        write_clip(videos / f"clip_{seed}.mp4", 96 - 8 * seed, 64, 3.0 + seed / 2, seed)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (data / "frames").mkdir(parents=True)
    (data / "audio").mkdir()
    for seed in range(2):
        Image.fromarray(_frame(72, 56, 20 + seed)).save(data / "frames" / f"pair_{seed}.jpg", quality=95)
        t = np.arange(4 * RATE) / RATE
        write_wav(data / "audio" / f"pair_{seed}.wav", 0.4 * np.sin(2 * np.pi * (300 + 300 * seed) * t))
    return {"root": root, "inputs": [str(videos), str(data)]}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _key(line: dict) -> tuple:
    return (line["id"], line.get("window"))


def _comparable(line: dict) -> dict:
    """What must agree between engines: everything except where a PNG was written."""
    return {k: v for k, v in line.items() if k != "png"}


@pytest.fixture(scope="module")
def local_reference(corpus, tiny_onnx_model, tmp_path_factory) -> dict[tuple, dict]:
    """The local engine's rows for the corpus, with --stride 1 (several windows per item)."""
    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    score_items(corpus["inputs"], tiny_onnx_model, out, stride=1.0, batch_size=4, workers=1)
    return {_key(line): line for line in _read(out)}


def _in_namespace(command: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", f"ip link set lo up && {command}"],
        cwd=ROOT,
        env=os.environ | RAY_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@needs_ray
def test_embedded_cluster_gives_the_local_engines_rows(corpus, tiny_onnx_model, local_reference, tmp_path):
    out, pngs = tmp_path / "ray.jsonl", tmp_path / "png"
    args = [*corpus["inputs"], "--model", str(tiny_onnx_model), "-o", str(out), "--stride", "1"]
    args += [
        "--engine",
        "ray",
        "--batch-size",
        "4",
        "--png-dir",
        str(pngs),
        "--png",
        "heatmap",
        "--no-progress",
    ]
    result = _in_namespace(" ".join([str(BIN / "fnac"), "score", *args]))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _read(out)
    assert sorted(_key(r) for r in rows) == sorted(local_reference)  # every window once, nothing else
    for row in rows:
        assert _comparable(row) == _comparable(local_reference[_key(row)])
    assert {r["error"]["code"] for r in rows if r["error"]} == {
        local_reference[("broken", None)]["error"]["code"]
    }
    # The heatmap PNGs are the local engine's too (written by the actors).
    written = {Path(r["png"]).name for r in rows if r.get("png")}
    assert written == {p.name for p in pngs.iterdir()} and len(written) == sum(
        1 for r in rows if not r["error"]
    )
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("scored 8 items") and "1 failed" in summary and "decode" in summary


@pytest.fixture(scope="module")
def two_node_report(corpus, tiny_onnx_model, tmp_path_factory) -> dict:
    """One two-node cluster: a run whose model actor is killed, and a run interrupted then resumed."""
    work = tmp_path_factory.mktemp("cluster")
    spec = {
        "work": str(work),
        # Batches of one window: the run streams items out, so the kills land while work remains.
        "args": [*corpus["inputs"], "--model", str(tiny_onnx_model), "--stride", "1", "--batch-size", "1"],
    }
    (work / "spec.json").write_text(json.dumps(spec))
    report = work / "report.json"
    command = f"{sys.executable} -m tests.training.ray_cluster {work / 'spec.json'} {report}"
    result = _in_namespace(command, timeout=600)
    assert result.returncode == 0 and report.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(report.read_text())


def _logs(run: dict) -> str:
    return "\n".join(Path(run[k]).read_text()[-2000:] for k in ("log", "rerun_log") if k in run)


@needs_ray
def test_two_node_cluster_loses_and_duplicates_nothing_when_a_worker_dies(two_node_report, local_reference):
    run = two_node_report["kill"]
    assert run.get("killed_pid"), f"no model actor process was found to kill: {run}\n{_logs(run)}"
    # The kill happened mid-run: the driver was still going and items were still to come.
    assert run["driver_alive_at_kill"] and run["lines_at_kill"] < len(local_reference), run
    assert run["exit_code"] == 0, _logs(run)
    rows = _read(Path(run["output"]))
    keys = [_key(r) for r in rows]
    assert len(keys) == len(set(keys)), "an item was written twice"
    assert sorted(keys) == sorted(local_reference), "an item was lost"
    for row in rows:
        assert _comparable(row) == _comparable(local_reference[_key(row)])


@needs_ray
def test_rerun_after_an_interrupted_run_finishes_it(two_node_report, local_reference):
    run = two_node_report["resume"]
    assert run["driver_alive_at_kill"], f"the first run ended before it could be interrupted\n{_logs(run)}"
    assert 0 < run["lines_after_interrupt"] < len(local_reference), run
    assert run["exit_code"] == 0, _logs(run)
    rows = _read(Path(run["output"]))
    keys = [_key(r) for r in rows]
    assert len(keys) == len(set(keys)) and sorted(keys) == sorted(local_reference)
    for row in rows:
        assert _comparable(row) == _comparable(local_reference[_key(row)])
    summary = Path(run["rerun_log"]).read_text().strip().splitlines()[-1]
    already = int(summary.split(" already done")[0].split()[-1])
    assert already >= 1, summary  # the rerun skipped what the first run had written


# ---------------------------------------------------------------------------------------------- writers


def _rows(n: int, failed: set[int] = frozenset()) -> list[list[dict]]:
    """Score rows shaped like the engines' (one item per entry; item 2 is a two-window sweep)."""
    items = []
    for i in range(n):
        base = {"id": f"item{i}", "source": {"video": f"/v/item{i}.mp4"}, "time": 1.5}
        if i in failed:
            error = {"code": "decode_failed", "message": "bad file"}
            items.append([base | {"time": None, "width": None, "score": None, "boxes": None, "error": error}])
            continue
        windows = 2 if i == 2 else 1
        item = []
        for w in range(windows):
            line = dict(base, width=64, height=48, score=0.25 + i / 100, sounding=bool(i % 2))
            line |= {"boxes": [{"x0": 1, "y0": 2, "x1": 30, "y1": 40, "score": 0.5}], "heatmap": [[1.0, 2.5]]}
            if windows > 1:
                line |= {"window": w, "windows": windows}
            item.append(line | {"model": {"name": "m", "sha256": "ab"}, "error": None})
        items.append(item)
    return items


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_parts_folder_round_trips_rows_and_resumes(tmp_path, fmt):
    items = _rows(5, failed={3})
    with PartsFolder(str(tmp_path / "out"), fmt, part_items=2) as sink:
        for lines in items[:4]:
            sink.write(lines)
    parts = PartsFolder(str(tmp_path / "out"), fmt)
    assert len(parts.parts()) == 2  # two items per part
    assert parts.existing.done == {"item0", "item1", "item2"} and parts.existing.failed == {"item3"}
    read = [row for part in parts.parts() for row in parts.read_part(part)]
    written = [line for lines in items[:4] for line in lines]
    assert len(read) == len(written)
    for got, want in zip(sorted(read, key=_key), sorted(written, key=_key), strict=True):
        # Parquet has a fixed schema: fields a row lacks come back as nulls; everything present is equal.
        assert {k: v for k, v in got.items() if k in want} | {"source": want["source"]} == want
        assert all(got[k] is None for k in got if k not in want)


def test_parts_folder_retry_failed_rewrites_parts_without_the_failures(tmp_path):
    with PartsFolder(str(tmp_path / "out"), "parquet", part_items=10) as sink:
        for lines in _rows(4, failed={1}):
            sink.write(lines)
    parts = PartsFolder(str(tmp_path / "out"), "parquet", retry_failed=True)
    assert parts.existing.failed == set() and parts.existing.done == {"item0", "item2", "item3"}
    ids = {row["id"] for part in parts.parts() for row in parts.read_part(part)}
    assert ids == {"item0", "item2", "item3"}


def test_an_unfinished_part_is_invisible(tmp_path):
    sink = PartsFolder(str(tmp_path / "out"), "jsonl", part_items=10)
    for lines in _rows(3):
        sink.write(lines)  # still pending: the process dies before the part is written
    assert PartsFolder(str(tmp_path / "out"), "jsonl").existing.done == set()
    sink.close()
    assert PartsFolder(str(tmp_path / "out"), "jsonl").existing.done == {"item0", "item1", "item2"}


def test_output_kinds(tmp_path):
    assert type(open_sink(str(tmp_path / "a.jsonl"))).__name__ == "JsonlFile"
    assert type(open_sink(str(tmp_path / "b"), "parquet")).__name__ == "PartsFolder"
    assert type(open_sink((tmp_path / "c").as_uri())).__name__ == "PartsFolder"  # file:// URI


def test_engine_ray_without_ray_is_a_one_line_error(corpus, tiny_onnx_model, tmp_path):
    # A Python whose `import ray` fails, as where the scale extra is not installed.
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "ray.py").write_text("raise ImportError('no ray here')\n")
    env = os.environ | {"PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}"}
    command = [
        sys.executable,
        "-m",
        "fnac",
        "score",
        *corpus["inputs"],
        "--model",
        str(tiny_onnx_model),
    ]
    result = subprocess.run(
        [*command, "-o", str(tmp_path / "o.jsonl"), "--engine", "ray"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [
        "fnac score: error: --engine ray needs Ray, which is not installed: pip install 'fnac[scale]'"
    ]
