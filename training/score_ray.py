"""`fnac score --engine ray`: the same scoring on Ray Data, from one machine to a cluster.

The driver (this process) finds the items, reads what the output already holds, and writes every finished
item; the work runs as two Ray Data stages that call the same per-item steps as the local engine:

1. decode: one CPU task per item (`training.score_inputs.decode_item`: the model inputs and, for overlay PNGs,
   the frames), run in a child process of the task's worker (`decode_isolated`), so that an input that
   crashes its decoder is that item's `decoder_crashed` failure row; a task whose worker dies is retried;
2. model: a pool of `--actors` actors, each with one ONNX Runtime session (its intra-op threads = the actor's
   CPUs; the CUDA provider only on actors given a GPU with `--gpus-per-actor`), running batches of windows;
   an actor that dies is restarted and its batch retried;
   the actor then turns the heatmaps into the local engine's rows (boxes, sounding, PNGs), so only decoded
   inputs and finished rows cross the object store.

Without `--ray-address` (or ``RAY_ADDRESS``) Ray starts an embedded cluster on this machine for the run.
Items finish in any order; the driver writes each id once (a duplicate delivery is dropped). A worker process
that dies (an OOM kill, a lost node) costs a retry of its task, up to `TASK_RETRIES` times; should a task fail
on every try, the run ends with a one-line error (the items written so far stay, a rerun resumes).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fnac.runtime import ModelRuntime
from training.score_inputs import Failure, Item, ScoreError, decode_isolated, unique_items
from training.score_output import open_sink
from training.score_rows import Setup, Summary, infer, item_rows, prepare

log = logging.getLogger("fnac.score")

RAY_MISSING = "--engine ray needs Ray, which is not installed: pip install 'fnac[scale]'"
# Retries of a task whose worker process died (an OOM kill, a lost node). Ray Data's default is to retry forever,
# which a task that kills its worker every time would turn into a hang.
TASK_RETRIES = 3


def import_ray():
    """Ray and Ray Data, or the one-line error saying which extra to install."""
    try:
        import ray
        import ray.data  # Ray Data is the point of the extra; ray alone is not enough
    except ImportError:
        raise ScoreError(RAY_MISSING) from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """How the run uses Ray: where the cluster is and how the model is spread over it."""

    address: str | None = None  # None: RAY_ADDRESS, else an embedded cluster
    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0


@dataclass
class RaySummary(Summary):
    """The local engine's summary, plus where the workers' time went (seconds summed over all workers)."""

    cluster_seconds: float = 0.0  # starting or joining the Ray cluster
    decode_seconds: float = 0.0
    model_seconds: float = 0.0
    rows_seconds: float = 0.0
    duplicates: int = 0

    def line(self) -> str:
        stages = (
            f"; cluster start {self.cluster_seconds:.1f} s; workers: decode {self.decode_seconds:.1f} s, "
            f"model {self.model_seconds:.1f} s, rows {self.rows_seconds:.1f} s"
        )
        duplicates = f"; {self.duplicates} duplicate deliveries dropped" if self.duplicates else ""
        return super().line() + (stages + duplicates if self.items else "")


# ---------------------------------------------------------------------------------------------- stages
# These run in Ray worker processes. Rows carry pickled (Item, Decoded, ...) tuples as bytes: numpy arrays
# pickle with a single copy, and Ray Data then moves opaque bytes instead of converting ragged tensors.


def _decode_stage(row: dict, job) -> dict:
    item = pickle.loads(row["item"])
    started = time.perf_counter()
    outcome = decode_isolated(item, job)
    return {
        "id": item.id,
        "payload": pickle.dumps((item, outcome), protocol=5),
        "decode_s": time.perf_counter() - started,
    }


class _ModelActor:
    """One ONNX Runtime session per actor: batches of decoded items in, their finished rows out."""

    def __init__(
        self, model_ref, model_name: str, batch_size: int, threads: int, providers: list[str], setup
    ):
        import ray

        # The model travels through the object store, so nodes need no copy of the file; ORT wants a path.
        folder = tempfile.mkdtemp(prefix="fnac-score-model-")
        path = Path(folder) / model_name
        path.write_bytes(ray.get(model_ref))
        self.runtime = ModelRuntime(path, providers=providers, intra_op_threads=threads)
        self.batch_size = batch_size
        self.setup = setup
        log.info("model actor pid %d: %s on %s", os.getpid(), model_name, self.runtime.providers)

    def __call__(self, batch: dict) -> dict:
        entries = [pickle.loads(payload) for payload in batch["payload"]]
        decoded = [(item, outcome) for item, outcome in entries if not isinstance(outcome, Failure)]
        started = time.perf_counter()
        inferred = {item.id: result for item, _, result in infer(self.runtime, decoded, self.batch_size)}
        seconds = time.perf_counter() - started
        windows = sum(len(d.times) for _, d in decoded) or 1
        lines, model_s, rows_s = [], [], []
        for item, outcome in entries:
            share = 0.0 if isinstance(outcome, Failure) else len(outcome.times) / windows
            model_s.append(seconds * share)
            started = time.perf_counter()
            rows = item_rows(item, outcome, inferred.get(item.id), self.setup)
            lines.append(json.dumps(rows, ensure_ascii=False))
            rows_s.append(time.perf_counter() - started)
        return {
            "id": batch["id"],
            "lines": np.array(lines, dtype=object),
            "decode_s": batch["decode_s"],
            "model_s": np.array(model_s),
            "rows_s": np.array(rows_s),
        }


# ---------------------------------------------------------------------------------------------- driver


def score_items_ray(
    items: Sequence[Item] | Sequence[str | Path],
    model: str | Path,
    output: str | Path,
    *,
    ray_options: RayOptions = RayOptions(),
    output_format: str = "jsonl",
    retry_failed: bool = False,
    providers: list[str] | None = None,
    progress: bool = False,
    **options,
) -> RaySummary:
    """Score `items` on Ray (see the module docstring); the rows of `training.score_local.score_items`, written
    to `output` (a JSONL file, or a folder of JSONL/Parquet parts on any pyarrow filesystem). `options` are
    those of `training.score_rows.prepare` (stride, batch_size, png_dir, sounding_threshold, ...)."""
    started = time.perf_counter()
    items = unique_items(items)
    if ray_options.actors < 1:
        raise ScoreError("--actors must be at least 1")
    if ray_options.gpus_per_actor < 0 or ray_options.cpus_per_actor <= 0:
        raise ScoreError("--gpus-per-actor must be >= 0 and --cpus-per-actor > 0")
    ray = import_ray()
    if options.get("png_dir") is not None:
        options["png_dir"] = Path(options["png_dir"]).resolve()  # the actors may run elsewhere
    # The driver reads the model once for its metadata (one CPU thread); the actors load their own copies.
    setup = prepare(model, providers=["cpu"], threads=1, **options)

    sink = open_sink(str(output), output_format, retry_failed=retry_failed)
    finished = sink.existing.done | sink.existing.failed
    todo = [item for item in items if item.id not in finished]
    summary = RaySummary(skipped=len(items) - len(todo), output=sink.label)
    try:
        if todo:
            connecting = time.perf_counter()
            _connect(ray, ray_options)
            summary.cluster_seconds = time.perf_counter() - connecting
            try:
                batch_size = options.get("batch_size", 16)
                _run(ray, todo, setup, sink, summary, ray_options, batch_size, providers, progress)
            finally:
                ray.shutdown()
    finally:
        sink.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _connect(ray, options: RayOptions) -> None:
    """Join the cluster at --ray-address / RAY_ADDRESS, or start an embedded one; check the actors fit."""
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    local = {}
    if address is None:
        # On one machine the model actors share the cores with decoding, as the local engine's ONNX Runtime
        # threads do with its decode workers: an actor mostly waits for decoded inputs, so its CPUs are added
        # to the machine's rather than taken from decoding. On a cluster, actors get CPUs of their own.
        cpus = (os.cpu_count() or 1) + math.ceil(options.actors * options.cpus_per_actor)
        local = {"num_cpus": cpus, "include_dashboard": False}
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, **local)
    except Exception as exc:  # unreachable address, refused token, ...
        where = address or "an embedded local cluster"
        raise ScoreError(f"cannot start Ray ({where}): {type(exc).__name__}: {exc}") from None
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    need_cpus = options.actors * options.cpus_per_actor
    need_gpus = options.actors * options.gpus_per_actor
    problem = None
    if need_gpus > gpus:
        problem = (
            f"{options.actors} actors x {options.gpus_per_actor:g} GPU need {need_gpus:g} GPUs, "
            f"the cluster has {gpus:g}"
        )
    elif need_cpus >= cpus:
        problem = (
            f"{options.actors} actors x {options.cpus_per_actor:g} CPU leave none of the cluster's "
            f"{cpus:g} CPUs for decoding; use fewer --actors or a smaller --cpus-per-actor"
        )
    if problem and address is None:
        ray.shutdown()
        raise ScoreError(problem)
    if problem:  # a cluster that autoscales may still grow into it
        log.warning("%s; waiting for the cluster to provide them", problem)
    log.info("Ray cluster %s: %g CPUs, %g GPUs", address or "(embedded)", cpus, gpus)


def _dataset(ray, todo: list[Item], job, options: RayOptions, batch_size: int, actor: dict):
    """The item dataset, the decode tasks (`job`: the setup's decode job) and the model actor pool (`actor`:
    its constructor's arguments)."""
    # One item per block: uneven clips balance across workers, and a crash costs one item's retry.
    ds = ray.data.from_items([{"item": pickle.dumps(item)} for item in todo], override_num_blocks=len(todo))
    with warnings.catch_warnings():
        # Retries are not among Ray Data's named parameters, hence the generic remote arguments.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = ds.map(_decode_stage, fn_kwargs={"job": job}, num_cpus=1, max_retries=TASK_RETRIES)
        return ds.map_batches(
            _ModelActor,
            fn_constructor_kwargs=actor,
            compute=ray.data.ActorPoolStrategy(size=options.actors),
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=options.cpus_per_actor,
            num_gpus=options.gpus_per_actor,
            max_restarts=-1,
            max_task_retries=TASK_RETRIES,
        )


def _run(ray, todo, setup: Setup, sink, summary, options, batch_size, providers, progress):
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours below counts items, which is what the user asked for
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)

    gpu = options.gpus_per_actor > 0
    actor = dict(
        model_ref=ray.put(setup.runtime.path.read_bytes()),
        model_name=setup.runtime.path.name,
        batch_size=batch_size,
        threads=max(1, math.floor(options.cpus_per_actor)),  # ORT threads = the CPUs Ray gave the actor
        providers=(providers or ["cuda", "cpu"]) if gpu else ["cpu"],  # CUDA only on GPU actors
        setup=replace(setup, runtime=None),  # the rest of the setup; the actor has its own session
    )
    ds = _dataset(ray, todo, setup.job, options, batch_size, actor)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="score", unit="item", dynamic_ncols=True, file=sys.stderr)
    written: set[str] = set()

    def write(item_id: str, lines: list[dict]) -> None:
        sink.write(lines)
        written.add(item_id)
        summary.count(lines, bar)

    try:
        for row in ds.iter_rows():
            if row["id"] in written:  # delivered twice (a retried task whose first run also finished)
                summary.duplicates += 1
                continue
            summary.decode_seconds += float(row["decode_s"])
            summary.model_seconds += float(row["model_s"])
            summary.rows_seconds += float(row["rows_s"])
            write(row["id"], json.loads(row["lines"]))
    except Exception as exc:  # e.g. a task that failed on every retry; what was written stays for a rerun
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ScoreError(
            f"the Ray run stopped after {len(written)} of {len(todo)} items ({type(exc).__name__}: "
            f"{first_line}); rerun the same command to resume"
        ) from None
    finally:
        if bar is not None:
            bar.close()
