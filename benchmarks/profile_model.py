"""Where a model's time goes, per node: ONNX Runtime's own profiler over repeated runs, summed by op type and by
network part. `python -m benchmarks.profile_model MODEL.onnx [MODEL2.onnx ...] --batch 1 --threads 2`

Parts come from the node names the exporter keeps (`/fnac/imgnet/...`, `/fnac/audnet/...`, the front end in
`/fnac/spectrogram/` and `/fnac/normalize/`); nodes the quantizer adds are named after the tensor they wrap,
so they land in the part of that tensor. Q/DQ nodes that ORT did not fuse into an integer kernel show up as
`QuantizeLinear` / `DequantizeLinear` rows: time spent converting, not computing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

PARTS = (
    ("spectrogram", "audio front end"),
    ("normalize", "image front end"),
    ("imgnet", "image trunk"),
    ("audnet", "audio trunk"),
    ("img_proj", "projections"),
    ("aud_proj", "projections"),
)


def part_of(node_name: str) -> str:
    for key, label in PARTS:
        if f"/{key}/" in node_name or f"{key}." in node_name or node_name.startswith(f"{key}/"):
            return label
    return "head (similarity, max) and other"


def session_options(threads: int, profile_prefix: str | None = None, spinning: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def inputs_for(session, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for item in session.get_inputs():
        shape = [batch if not isinstance(d, int) else d for d in item.shape]
        if item.type == "tensor(uint8)":
            feeds[item.name] = rng.integers(0, 255, shape, dtype=np.uint8)
        else:
            feeds[item.name] = (0.3 * rng.standard_normal(shape)).astype(np.float32)
    return feeds


def profile(path: str | Path, batch: int, threads: int, runs: int) -> dict:
    """Run `runs` times after 3 warm-ups with ORT profiling on; per-node totals in ms per run."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        session = ort.InferenceSession(
            str(path), session_options(threads, os.path.join(tmp, "p")), providers=["CPUExecutionProvider"]
        )
        feeds = inputs_for(session, batch)
        for _ in range(3):
            session.run(None, feeds)
        started = time.perf_counter()
        for _ in range(runs):
            session.run(None, feeds)
        wall = (time.perf_counter() - started) / runs
        events = json.loads(Path(session.end_profiling()).read_text())
    # The warm-up runs are in the trace too: keep only the last `runs` model_run events' windows.
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[-runs:]
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in model_runs]
    by_node: dict[str, float] = defaultdict(float)
    op_of: dict[str, str] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        if not any(start <= event["ts"] <= end for start, end in windows):
            continue
        name = event["name"][: -len("_kernel_time")]
        by_node[name] += event["dur"] / 1000 / runs
        op_of[name] = event.get("args", {}).get("op_name", "?")
    run_ms = statistics.mean(e["dur"] for e in model_runs) / 1000
    by_op: dict[str, float] = defaultdict(float)
    by_part: dict[str, float] = defaultdict(float)
    count_op: dict[str, int] = defaultdict(int)
    for name, ms in by_node.items():
        by_op[op_of[name]] += ms
        count_op[op_of[name]] += 1
        by_part[part_of(name)] += ms
    return {
        "model": str(path),
        "batch": batch,
        "threads": threads,
        "runs": runs,
        "wall_ms": wall * 1000,
        "model_run_ms": run_ms,
        "kernel_ms": sum(by_node.values()),
        "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
        "nodes_per_op": dict(count_op),
        "by_part": dict(sorted(by_part.items(), key=lambda kv: -kv[1])),
        "top_nodes": sorted(([n, op_of[n], ms] for n, ms in by_node.items()), key=lambda r: -r[2])[:15],
    }


def print_profile(result: dict) -> None:
    print(
        f"{result['model']}: batch {result['batch']}, {result['threads']} threads, {result['runs']} runs: "
        f"{result['wall_ms']:.1f} ms per run (ORT model_run {result['model_run_ms']:.1f} ms, kernels "
        f"{result['kernel_ms']:.1f} ms)"
    )
    print("  by op type (ms per run, nodes):")
    for op, ms in result["by_op"].items():
        if ms >= 0.05:
            print(f"    {op:<28} {ms:7.2f}  ({result['nodes_per_op'][op]})")
    print("  by part:")
    for part, ms in result["by_part"].items():
        print(f"    {part:<36} {ms:7.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", help="write the profiles here")
    args = parser.parse_args(argv)
    results = []
    for model in args.models:
        result = profile(model, args.batch, args.threads or os.cpu_count() or 1, args.runs)
        print_profile(result)
        results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
