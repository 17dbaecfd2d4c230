"""Reliability, security and performance evidence: `python -m benchmarks.reliability <part>`.

Every part runs against real processes on this machine (loopback only), is bounded in time, prints its
figures and exits non-zero when its claim does not hold:

- `malformed`    the malformed-upload corpus (benchmarks/malformed.py), several rounds: every answer a 4xx
                 JSON error in time, no 5xx, the server alive, its RSS (decode workers included) flat
- `fuzz`         hypothesis over the decode + preprocessing functions (only MediaError), then mutated uploads
                 against a live server (no 5xx, the process never dies)
- `schemathesis` the OpenAPI schema against the live server: no 5xx, responses match the schema
- `load`         32 concurrent clients for 60 s: no errors but deliberate 429/503, p50/p99
- `soak`         steady load with RSS sampled: growth after warm-up < 1 % per hour
- `kill-train`   `fnac train` SIGKILLed at random points (one process and under torchrun), resumed each time
- `decode-speed` frame + 3 s audio window from a 10 s 720p H.264/AAC clip: fnac.media vs the ffmpeg CLI

The served model is --model, else FNAC_MODEL / the bundled one, else a randomly initialised network of the
bundled model's shape (timings depend on the model; correctness claims do not).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import malformed
from training.live_server import live_server

ROOT = Path(__file__).resolve().parents[1]

# Limits for the servers these checks start: small, so that limit-breaking uploads stay cheap to build.
SMALL_LIMITS = malformed.Limits(
    max_upload_bytes=2 * 2**20, max_parts=8, max_clip_seconds=20.0, max_image_pixels=4_000_000, max_windows=16
)


def limit_env(limits: malformed.Limits) -> dict[str, str]:
    return {
        "FNAC_MAX_UPLOAD_MB": f"{limits.max_upload_bytes / 2**20:g}",
        "FNAC_MAX_PARTS": str(limits.max_parts),
        "FNAC_MAX_CLIP_SECONDS": f"{limits.max_clip_seconds:g}",
        "FNAC_MAX_IMAGE_PIXELS": str(limits.max_image_pixels),
        "FNAC_MAX_WINDOWS": str(limits.max_windows),
    }


# ---------------------------------------------------------------------------------------------- server


def resolve_model(requested: str | None, work_dir: Path) -> tuple[Path, str]:
    """--model, else FNAC_MODEL / the bundled model, else a random network of the bundled model's shape."""
    from service.config import Settings

    if requested:
        if not Path(requested).is_file():
            raise SystemExit(f"model file {requested!r} not found")
        return Path(requested), requested
    configured = Settings().model
    if Path(configured).is_file():
        return Path(configured), str(configured)
    import torch

    from model.config import FNACConfig
    from model.export import export_onnx
    from model.fnac import FNAC

    torch.manual_seed(0)
    config = FNACConfig(width=16, dim=128, image_size=128)
    path = work_dir / "fnac-random-w16-d128-s128.onnx"
    export_onnx(FNAC(config).eval(), path, {"model_name": "fnac-random-w16", "training_data": "random init"})
    return path, f"{configured} missing; random FNAC width 16, dim 128, 128 px (the bundled model's shape)"


def good_requests() -> list[tuple[str, dict]]:
    """Two valid requests a user sends: a 4 s 160x120 H.264/AAC clip, and a 640x360 JPEG + 3 s 44.1 kHz WAV."""
    from training.bench_service import request_files

    clip = malformed.encode_clip(4.0, size=(160, 120), audio_rate=44100)
    return [("clip", {"video": ("clip.mp4", clip, "video/mp4")}), ("image+audio", request_files(3.0))]


# ---------------------------------------------------------------------------------------------- load


@dataclass
class LoadResult:
    seconds: float
    statuses: Counter
    latencies_ms: list[float]  # successful requests only
    transport_errors: Counter

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def unexpected(self) -> int:
        """Anything but 200 and the deliberate overload answers (429, 503), transport failures included."""
        return sum(n for s, n in self.statuses.items() if s not in (200, 429, 503)) + sum(
            self.transport_errors.values()
        )

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def line(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        errors = ", ".join(f"{e}: {n}" for e, n in self.transport_errors.items()) or "none"
        return (
            f"{self.ok} ok in {self.seconds:.1f} s = {self.ok / self.seconds:.1f} req/s; p50 "
            f"{self.percentile(50):.0f} ms, p99 {self.percentile(99):.0f} ms; statuses {{{statuses}}}; "
            f"transport errors: {errors}"
        )


async def closed_loop(
    base: str, requests: list[tuple[str, dict]], concurrency: int, seconds: float
) -> LoadResult:
    """`concurrency` clients each posting the next request as soon as the previous answered, for `seconds`."""
    import httpx

    result = LoadResult(seconds, Counter(), [], Counter())
    deadline = time.perf_counter() + seconds

    async def client_loop(client: httpx.AsyncClient, offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            _, files = requests[i % len(requests)]
            i += 1
            sent = time.perf_counter()
            try:
                response = await client.post(f"{base}/localize", files=files)
            except httpx.TransportError as exc:
                result.transport_errors[type(exc).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            result.statuses[response.status_code] += 1
            if response.status_code == 200:
                result.latencies_ms.append((time.perf_counter() - sent) * 1000)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client, k) for k in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result


def metric_value(base: str, name: str) -> float:
    """Sum of a Prometheus counter over its labels, from /metrics."""
    import httpx

    total = 0.0
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def status_counts(base: str, route: str | None = None) -> Counter:
    """fnac_requests_total by status (of one route, or all), from /metrics."""
    import httpx

    counts: Counter = Counter()
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("fnac_requests_total{") and (route is None or f'route="{route}"' in line):
            status = line.split('status="', 1)[1].split('"', 1)[0]
            counts[status] += float(line.rsplit(" ", 1)[1])
    return counts


# ---------------------------------------------------------------------------------------------- parts


def run_malformed(args, work: Path) -> int:
    """The corpus, `--rounds` times, against a server with small limits."""
    model, source = resolve_model(args.model, work)
    corpus = malformed.build_corpus(SMALL_LIMITS)
    print(f"model: {source}\ncorpus: {len(corpus)} kinds x {args.rounds} rounds, limits {SMALL_LIMITS}")
    env = {**limit_env(SMALL_LIMITS), "FNAC_DECODE_TIMEOUT_S": "10"}
    failures = []
    with live_server(model, work / "server.log", env) as server:
        import httpx

        rss = [server.rss_bytes()]
        worst: dict[str, malformed.Outcome] = {}
        for _ in range(args.rounds):
            for outcome in malformed.send_all(server.base, corpus, timeout_s=args.timeout):
                if outcome.kind not in worst or outcome.seconds > worst[outcome.kind].seconds:
                    worst[outcome.kind] = outcome
                if not outcome.clean_4xx or outcome.seconds > args.timeout:
                    failures.append(outcome)
            rss.append(server.rss_bytes())
        healthz = httpx.get(f"{server.base}/healthz", timeout=10).status_code
        kind, files = good_requests()[0]
        good = httpx.post(f"{server.base}/localize", files=files, timeout=60).status_code
        restarts = metric_value(server.base, "fnac_decode_worker_restarts_total")
        statuses = status_counts(server.base)
    expected = {u.kind: u.expect for u in corpus}
    print(f"\n{'kind':<28} {'status':>6} {'code':<22} {'max s':>6}")
    for name, outcome in worst.items():
        flag = "" if outcome.status in expected[name] else f"  (expected {sorted(expected[name])})"
        print(f"{name:<28} {outcome.status!s:>6} {outcome.code!s:<22} {outcome.seconds:6.2f}{flag}")
    five = sum(n for s, n in statuses.items() if s.startswith("5"))
    print(f"\nserver statuses (from /metrics): {dict(sorted(statuses.items()))}; 5xx: {five:g}")
    print(f"decode worker restarts: {restarts:g}; after: healthz {healthz}, good {kind} request {good}")
    mib = [r / 2**20 for r in rss]
    print("RSS server + workers per round (MiB): " + " ".join(f"{m:.0f}" for m in mib))
    growth = (mib[-1] - mib[1]) / mib[1] if len(mib) > 2 else 0.0
    print(f"RSS growth from round 1 to round {args.rounds}: {growth:+.1%}")
    for outcome in failures:
        print(f"FAIL {outcome}")
    return 0 if not failures and five == 0 and healthz == 200 and good == 200 and growth < 0.10 else 1


def run_load(args, work: Path) -> int:
    model, source = resolve_model(args.model, work)
    requests = good_requests()
    print(
        f"model: {source}; {args.concurrency} clients for {args.seconds:g} s, requests alternate "
        f"{' / '.join(k for k, _ in requests)}; server and clients share this machine"
    )
    env = dict(item.split("=", 1) for item in args.env)
    if env:
        print(f"server settings: {env}")
    with live_server(model, work / "server.log", env) as server:
        asyncio.run(closed_loop(server.base, requests, 4, 3.0))  # warm-up, not measured
        result = asyncio.run(closed_loop(server.base, requests, args.concurrency, args.seconds))
        alive = server.alive()
    print(result.line())
    print(
        f"unexpected answers (not 200/429/503, transport errors included): {result.unexpected}; server alive: {alive}"
    )
    return 0 if result.unexpected == 0 and alive and result.ok > 0 else 1


def run_soak(args, work: Path) -> int:
    """Steady load for `--minutes`; RSS sampled every `--sample-s`; growth measured after `--warmup-s`.

    Each sample splits the total into the server process and its children (decode workers), so growth can
    be pinned on one of them; the verdict is growth per hour after warm-up (`--max-growth-per-hour`)."""
    model, source = resolve_model(args.model, work)
    requests = good_requests()
    env = dict(item.split("=", 1) for item in args.env)
    print(
        f"model: {source}; {args.concurrency} clients for {args.minutes:g} min, RSS every {args.sample_s:g} s, "
        f"warm-up {args.warmup_s:g} s; server settings: {env or 'defaults'}",
        flush=True,
    )
    samples: list[tuple[float, int, int]] = []  # (seconds, server + children, server alone)
    with live_server(model, work / "server.log", env) as server:
        stop = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not stop.wait(args.sample_s):
                total, own = server.rss_bytes(), server.own_rss_bytes()
                samples.append((time.monotonic() - started, total, own))
                if args.log_every and len(samples) % args.log_every == 0:
                    print(
                        f"  t={samples[-1][0]:6.0f} s  RSS {total / 2**20:7.1f} MiB (server {own / 2**20:.1f})",
                        flush=True,
                    )

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = asyncio.run(closed_loop(server.base, requests, args.concurrency, args.minutes * 60))
        stop.set()
        sampler.join()
        alive = server.alive()
    after = [s for s in samples if s[0] >= args.warmup_s]
    if len(after) < 6:
        print("too few RSS samples after the warm-up")
        return 1
    tenth = max(3, len(after) // 10)

    def growth(column: int) -> tuple[float, float, float]:
        """(start, end, growth per hour): means of the first and last 10 % after warm-up."""
        first, last = after[:tenth], after[-tenth:]
        start = statistics.mean(s[column] for s in first)
        end = statistics.mean(s[column] for s in last)
        hours = (statistics.mean(s[0] for s in last) - statistics.mean(s[0] for s in first)) / 3600
        return start, end, (end - start) / start / hours

    start, end, per_hour = growth(1)
    own_start, own_end, own_per_hour = growth(2)
    peak = max(s[1] for s in after)
    for t, rss, own in samples[:: max(1, len(samples) // 20)]:
        print(f"  t={t:6.0f} s  RSS {rss / 2**20:7.1f} MiB (server {own / 2**20:.1f} MiB)")
    print(result.line())
    print(
        f"RSS after warm-up: start {start / 2**20:.1f} MiB, end {end / 2**20:.1f} MiB, peak "
        f"{peak / 2**20:.1f} MiB; growth {per_hour:+.2%} per hour (limit {args.max_growth_per_hour:+.0%}); "
        f"server process alone {own_start / 2**20:.1f} -> {own_end / 2**20:.1f} MiB ({own_per_hour:+.2%} per hour), "
        f"decode workers {(start - own_start) / 2**20:.1f} -> {(end - own_end) / 2**20:.1f} MiB; "
        f"{len(samples)} samples; server alive: {alive}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "settings": env,
                    "samples": samples,
                    "growth_per_hour": per_hour,
                    "server_growth_per_hour": own_per_hour,
                    "ok": result.ok,
                    "unexpected": result.unexpected,
                }
            )
        )
    return 0 if per_hour < args.max_growth_per_hour and alive and result.unexpected == 0 else 1


# ---------------------------------------------------------------------------------------------- training

TINY_TRAIN = ["--width", "8", "--dim", "32", "--image-size", "64", "--clip-seconds", "1", "--workers", "0"]
TINY_TRAIN += ["--batch-size", "8", "--warmup-epochs", "1", "--no-progress"]
# Per-epoch figures that must not depend on being killed and resumed (timings and throughput do).
DETERMINISTIC = (
    "train_loss",
    "train_contrastive",
    "val_ap50",
    "val_mean_ciou",
    "val_loss",
    "val_retrieval_top1",
)


def make_tiny_synth(root: Path) -> Path:
    from training.synth import make_synth

    make_synth(
        root,
        n_classes=4,
        n_train=32,
        n_val=8,
        n_test=8,
        image_size=64,
        clip_seconds=1.0,
        distractors=(0, 1),
        negatives=False,
    )
    return root


def train_command(data: Path, run: Path, epochs: int, nproc: int = 1, resume: bool = False) -> list[str]:
    args = ["--data", str(data), "-o", str(run), "--epochs", str(epochs), *TINY_TRAIN]
    args += ["--resume"] if resume else []
    if nproc == 1:
        return [sys.executable, "-m", "training.train", *args]
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    return [torchrun, "--standalone", "--nproc_per_node", str(nproc), "-m", "training.train", *args]


def train_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


@dataclass
class Kill:
    """One SIGKILL of a training run and what the run directory held right after it."""

    aim: str  # "random" (a random moment) or "checkpoint" (as soon as a checkpoint write is seen)
    at_s: float  # seconds after the launch
    logged_epoch: int  # the last "epoch N:" line the run had logged
    last_epoch: int  # epoch stored in last.pt (0: none yet)
    metrics_rows: int
    hit_write: bool  # a checkpoint temp file was being written at the kill
    checkpoints_ok: bool  # every .pt in the run loads as a checkpoint and a model

    def line(self) -> str:
        return (
            f"kill ({self.aim:>10}) at {self.at_s:5.2f} s: logged epoch {self.logged_epoch}, last.pt epoch "
            f"{self.last_epoch}, metrics rows {self.metrics_rows}, mid-write {'yes' if self.hit_write else 'no'}, "
            f"checkpoints {'all load' if self.checkpoints_ok else 'CORRUPT'}"
        )


def _temp_files(run: Path) -> set[str]:
    return {p.name for p in run.glob(".*.tmp")} if run.exists() else set()


def _check_checkpoints(run: Path) -> bool:
    from model.checkpoint import CheckpointError, load_model

    try:
        for path in run.glob("*.pt"):
            load_model(path)
    except (CheckpointError, RuntimeError, KeyError):
        return False
    return True


def kill_once(command: list[str], run: Path, aim: str, delay_s: float, log_path: Path, timeout: float = 300):
    """Start `command`, SIGKILL its whole process group at `delay_s` (aim "random") or as soon as a new
    checkpoint temp file appears after `delay_s` (aim "checkpoint"). Returns the Kill, or None when the run
    finished first."""
    from model.checkpoint import read_checkpoint

    before = _temp_files(run)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=train_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    started = time.monotonic()
    hit_write = False
    try:
        while process.poll() is None:
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                raise RuntimeError(
                    f"training did not finish in {timeout:g} s:\n{log_path.read_text()[-2000:]}"
                )
            if elapsed >= delay_s and (aim == "random" or _temp_files(run) - before):
                hit_write = aim == "checkpoint"
                os.killpg(process.pid, signal.SIGKILL)  # torchrun's workers too: a machine that lost power
                break
            time.sleep(0.001 if aim == "checkpoint" and elapsed >= delay_s else 0.01)
    finally:
        process.wait()
    at_s = time.monotonic() - started
    if process.returncode == 0:
        return None
    if process.returncode != -signal.SIGKILL:
        raise RuntimeError(f"training failed (exit {process.returncode}):\n{log_path.read_text()[-3000:]}")
    time.sleep(0.2)  # torchrun's workers are in the same group; let the kernel reap them
    logged = [
        int(line.split("epoch ", 1)[1].split(":", 1)[0])
        for line in log_path.read_text().splitlines()
        if "fnac.train: epoch " in line
    ]
    last = run / "last.pt"
    metrics = run / "metrics.jsonl"
    return Kill(
        aim=aim,
        at_s=at_s,
        logged_epoch=max(logged, default=0),
        last_epoch=read_checkpoint(last)["epoch"] if last.exists() else 0,
        metrics_rows=len(metrics.read_text().splitlines()) if metrics.exists() else 0,
        hit_write=hit_write and bool(_temp_files(run) - before),
        checkpoints_ok=_check_checkpoints(run),
    )


def kill_and_resume(
    data: Path,
    run: Path,
    *,
    epochs: int,
    kills: int,
    nproc: int,
    rng: random.Random,
    max_delay_s: float,
    log_dir: Path,
) -> list[Kill]:
    """Kill the run `kills` times at random points (every other kill aimed at a checkpoint write), resuming
    after each; then resume to the end. Returns the kills that happened (a run may finish before a kill)."""
    done: list[Kill] = []
    remaining = epochs
    for k in range(kills):
        aim = "checkpoint" if k % 2 else "random"
        command = train_command(data, run, epochs, nproc, resume=k > 0)
        # aim within what is left of the run: start-up (~3 s here) plus the remaining epochs' share
        upper = min(max_delay_s, 3.0 + max_delay_s * remaining / epochs)
        kill = kill_once(command, run, aim, rng.uniform(0.5, upper), log_dir / f"kill{k}.log")
        if kill is None:
            return done
        if kill.last_epoch >= epochs:  # killed while exiting after the last epoch: nothing to resume
            return done
        done.append(kill)
        remaining = epochs - kill.last_epoch
    final = subprocess.run(
        train_command(data, run, epochs, nproc, resume=True),
        cwd=ROOT,
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if final.returncode != 0:
        raise RuntimeError(f"the final resume failed:\n{final.stderr[-3000:]}")
    return done


def compare_runs(reference: Path, resumed: Path) -> dict:
    """Final weights and per-epoch deterministic metrics of two runs of the same command."""
    import torch

    from model.checkpoint import read_checkpoint

    a, b = read_checkpoint(reference / "last.pt"), read_checkpoint(resumed / "last.pt")
    max_diff = max(float((a["model"][k].double() - b["model"][k].double()).abs().max()) for k in a["model"])
    identical = all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    rows_a = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    metric_diff = max(
        (
            abs(ra[key] - rb[key])
            for ra, rb in zip(rows_a, rows_b, strict=True)
            for key in DETERMINISTIC
            if key in ra and key in rb
        ),
        default=0.0,
    )
    return {
        "epochs": [r["epoch"] for r in rows_b],
        "last_epoch": b["epoch"],
        "weights_identical": identical,
        "max_weight_diff": max_diff,
        "max_metric_diff": metric_diff,
        "final_reference": {k: rows_a[-1].get(k) for k in DETERMINISTIC if k in rows_a[-1]},
        "final_resumed": {k: rows_b[-1].get(k) for k in DETERMINISTIC if k in rows_b[-1]},
    }


def kill_violations(kills: list[Kill]) -> list[str]:
    """The durability claims, per kill: checkpoints load, nothing logged is lost, metrics follow last.pt."""
    problems = []
    for kill in kills:
        if not kill.checkpoints_ok:
            problems.append(f"corrupt checkpoint after {kill.line()}")
        if kill.last_epoch < kill.logged_epoch:  # an epoch reported done is gone: more than one epoch lost
            problems.append(f"logged epoch lost after {kill.line()}")
        if kill.metrics_rows not in (kill.last_epoch, kill.last_epoch - 1):
            problems.append(f"metrics.jsonl out of step with last.pt after {kill.line()}")
    return problems


def run_kill_train(args, work: Path) -> int:
    """Many random SIGKILLs of `fnac train`, single-process and under torchrun, each run resumed to the end and
    compared with an uninterrupted run of the same command."""
    data = make_tiny_synth(work / "synth")
    rng = random.Random(args.seed)
    print(f"seed {args.seed}; tiny network, 32 synthetic training samples, {args.epochs} epochs")
    problems, summary = [], []
    for nproc, kills in ((1, args.kills), (2, args.torchrun_kills)):
        if not kills:
            continue
        label = "1 process" if nproc == 1 else f"torchrun --nproc_per_node {nproc}"
        reference = work / f"reference-{nproc}"
        started = time.monotonic()
        subprocess.run(
            train_command(data, reference, args.epochs, nproc),
            cwd=ROOT,
            env=train_env(),
            check=True,
            capture_output=True,
            timeout=900,
        )
        run_s = time.monotonic() - started
        print(f"\n{label}: uninterrupted run {run_s:.1f} s; killing at random points up to {run_s:.1f} s")
        done: list[Kill] = []
        for attempt in range(3 * kills):  # a run can finish before its kill lands; start another then
            if len(done) >= kills:
                break
            run = work / f"killed-{nproc}-{attempt}"
            want = min(kills - len(done), args.kills_per_run)
            happened = kill_and_resume(
                data,
                run,
                epochs=args.epochs,
                kills=want,
                nproc=nproc,
                rng=rng,
                max_delay_s=run_s,
                log_dir=work,
            )
            for kill in happened:
                print("  " + kill.line())
            done += happened
            comparison = compare_runs(reference, run)
            print(
                f"  resumed run {run.name}: epochs {comparison['epochs'][0]}..{comparison['epochs'][-1]}, "
                f"weights identical to the uninterrupted run: {comparison['weights_identical']} (max |diff| "
                f"{comparison['max_weight_diff']:.2e}), max per-epoch metric diff {comparison['max_metric_diff']:.2e}"
            )
            if comparison["epochs"] != list(range(1, args.epochs + 1)):
                problems.append(f"{run.name}: epochs {comparison['epochs']}")
            if comparison["max_metric_diff"] > args.tolerance:
                problems.append(f"{run.name}: metrics differ by {comparison['max_metric_diff']:.2e}")
        problems += kill_violations(done)
        summary.append(
            f"{label}: {len(done)} kills ({sum(k.hit_write for k in done)} during a checkpoint write, "
            f"{sum(k.aim == 'random' for k in done)} at random moments), "
            f"corrupt checkpoints {sum(not k.checkpoints_ok for k in done)}"
        )
    print()
    for line in summary:
        print(line)
    for problem in problems:
        print(f"FAIL {problem}")
    return 0 if not problems else 1


def run_fuzz(args, work: Path) -> int:
    """Hypothesis over the decode functions in this process, then mutated uploads against a live server."""
    import traceback

    import httpx
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from benchmarks import fuzzing

    fuzzing.seeds()
    import faulthandler

    faulthandler.enable()  # a crash in a native decoder prints where it happened
    crash_dir = Path(args.crash_dir)
    crash_dir.mkdir(parents=True, exist_ok=True)
    print(f"inputs under test are written to {crash_dir} (kept if a native decoder crashes this process)")
    media_s = args.seconds * args.media_share
    examples: Counter = Counter()
    findings: dict[tuple, str] = {}
    slowest = [0.0, ""]
    deadline = time.monotonic() + media_s

    @settings(
        max_examples=50,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def media_batch(data):
        target = data.draw(st.sampled_from(["clip", "clip sweep", "image+audio", "image", "audio"]))
        families = {
            "image+audio": [fuzzing.IMAGES, fuzzing.SOUNDS],
            "image": [fuzzing.IMAGES],
            "audio": [fuzzing.SOUNDS],
        }.get(target, [fuzzing.CLIPS])
        if data.draw(st.integers(0, 4)) == 0:  # any seed in any field: polyglots and the wrong kind of file
            families = [None] * len(families)
        inputs = [data.draw(fuzzing.mutated(family)) for family in families]
        for k, blob in enumerate(inputs):  # on disk first: a native crash (SIGSEGV) leaves its input behind
            (crash_dir / f"current-{k}.bin").write_bytes(blob)
        (crash_dir / "current-target.txt").write_text(target)
        started = time.perf_counter()
        try:
            if target.startswith("clip"):
                fuzzing.check_video(inputs[0], 0.5 if target == "clip sweep" else None)
            elif target == "image+audio":
                fuzzing.check_image_audio(*inputs)
            elif target == "image":
                fuzzing.check_image(inputs[0])
            else:
                fuzzing.check_audio(inputs[0])
        except Exception as exc:  # anything but a MediaError (or a wrong shape) is a finding
            findings.setdefault((target, type(exc).__name__, str(exc)[:120]), traceback.format_exc()[-1500:])
        took = time.perf_counter() - started
        examples[target] += 1
        if took > slowest[0]:
            slowest[:] = [took, target]

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns loudly about every corrupt TIFF/EXIF tag
        while time.monotonic() < deadline:
            media_batch()
    print(
        f"decode fuzz: {sum(examples.values())} examples in {media_s:.0f} s ({dict(examples)}); slowest "
        f"{slowest[0]:.2f} s ({slowest[1]}); findings: {len(findings)}"
    )
    for key, trace in findings.items():
        print(f"FINDING {key}\n{trace}")

    model, source = resolve_model(args.model, work)
    statuses: Counter = Counter()
    transport: Counter = Counter()
    api_deadline = time.monotonic() + args.seconds - media_s
    with live_server(
        model, work / "server.log", {**limit_env(SMALL_LIMITS), "FNAC_DECODE_TIMEOUT_S": "10"}
    ) as server:
        client = httpx.Client(timeout=30)

        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(st.data())
        def api_batch(data):
            if data.draw(st.booleans()):
                parts = [("video", "fuzz.mp4", data.draw(fuzzing.mutated(fuzzing.CLIPS)), "video/mp4")]
            else:
                parts = [
                    ("image", "fuzz.png", data.draw(fuzzing.mutated(fuzzing.IMAGES)), "image/png"),
                    ("audio", "fuzz.wav", data.draw(fuzzing.mutated(fuzzing.SOUNDS)), "audio/wav"),
                ]
            params = data.draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "t": st.sampled_from(["0", "0.5", "2", "-1", "nan", "inf", "1e308"]),
                        "stride": st.sampled_from(["0.5", "1", "1e-9", "0"]),
                        "format": st.sampled_from(["json", "png", "mp4", "gif"]),
                        "start": st.sampled_from(["0", "1", "-1", "nan"]),
                        "end": st.sampled_from(["0.5", "2", "1e308"]),
                        "heatmap_png": st.sampled_from(["true", "false", "maybe"]),
                    },
                )
            )
            body, content_type = malformed.multipart(parts)
            try:
                response = client.post(
                    f"{server.base}/localize",
                    content=body,
                    params=params,
                    headers={"Content-Type": content_type},
                )
                statuses[response.status_code] += 1
            except httpx.TransportError as exc:
                transport[type(exc).__name__] += 1

        while time.monotonic() < api_deadline and server.alive():
            api_batch()
        alive = server.alive()
        healthz = httpx.get(f"{server.base}/healthz", timeout=10).status_code if alive else None
        kind, files = good_requests()[0]
        good = httpx.post(f"{server.base}/localize", files=files, timeout=60).status_code if alive else None
        restarts = metric_value(server.base, "fnac_decode_worker_restarts_total") if alive else float("nan")
        client.close()
    five = sum(n for status, n in statuses.items() if status >= 500)
    print(
        f"API fuzz ({source}): {sum(statuses.values())} uploads in {args.seconds - media_s:.0f} s; statuses "
        f"{dict(sorted(statuses.items()))}; 5xx {five}; transport errors {dict(transport) or 0}; decode worker "
        f"restarts {restarts:g}; server alive {alive}, healthz {healthz}, good {kind} request {good}"
    )
    return 0 if not findings and not five and not transport and alive and good == 200 else 1


def run_schemathesis(args, work: Path) -> int:
    """Schemathesis (its CLI) against the live server's OpenAPI schema."""
    model, source = resolve_model(args.model, work)
    checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
    with live_server(
        model, work / "server.log", {**limit_env(SMALL_LIMITS), "FNAC_DECODE_TIMEOUT_S": "10"}
    ) as server:
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{server.base}/openapi.json",
            "--checks",
            checks,
            "--max-time",
            str(int(args.seconds)),
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "--continue-on-failure",
            "--report",
            "junit",
            "--report-dir",
            str(work / "report"),
        ]
        print(f"model: {source}\n$ {' '.join(command[1:])}", flush=True)
        result = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 300)
        alive = server.alive()
        statuses = status_counts(server.base) if alive else {}
    print(result.stdout[-6000:], result.stderr[-2000:])
    five = sum(n for status, n in statuses.items() if status.startswith("5"))
    print(
        f"server statuses (from /metrics): {dict(sorted(statuses.items()))}; 5xx {five:g}; alive {alive}; "
        f"schemathesis exit {result.returncode}"
    )
    return 0 if result.returncode == 0 and five == 0 and alive else 1


def run_decode_speed(args, work: Path) -> int:
    """Frame at 5 s + the 3 s audio window around it from a 10 s 720p H.264/AAC clip: fnac.media.decode_clip
    on the uploaded bytes vs the ffmpeg CLI in a subprocess doing the same extraction, interleaved."""
    from fnac import media

    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        print("ffmpeg CLI not found (scripts/system_deps.sh installs it)")
        return 2
    version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    import av

    print(
        f"{version}; PyAV {av.__version__} (FFmpeg {av.library_versions.get('libavcodec')} libavcodec); "
        f"{os.cpu_count()} CPUs (shared); {args.repeats} interleaved repeats, medians"
    )
    failed = False
    for gop_s in args.gop:
        clip = malformed.encode_clip(
            10.0, size=(1280, 720), fps=25, gop=round(25 * gop_s), audio_rate=44100, textured=True
        )
        path = work / f"clip-gop{gop_s:g}.mp4"
        path.write_bytes(clip)
        rgb, pcm = work / "frame.rgb", work / "audio.f32"
        command = [
            ffmpeg,
            "-v",
            "error",
            "-nostdin",
            "-y",
            "-ss",
            "5",
            "-i",
            str(path),
            "-ss",
            "3.5",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            str(rgb),
            "-map",
            "1:a:0",
            "-t",
            "3",
            "-ac",
            "1",
            "-ar",
            "16000",
            "-f",
            "f32le",
            str(pcm),
        ]
        ours, theirs = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            window = media.decode_clip(clip, clip_seconds=3.0, sample_rate=16000, name="clip.mp4")
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run(command, check=True)
            theirs.append(time.perf_counter() - started)
        frame = np.fromfile(rgb, np.uint8).reshape(720, 1280, 3)
        audio = np.fromfile(pcm, np.float32)
        n = min(audio.size, window.audio.size)
        correlation = float(np.corrcoef(audio[:n], window.audio[:n])[0, 1])
        ratio = statistics.median(ours) / statistics.median(theirs)
        failed |= ratio > 0.5
        print(
            f"10 s 1280x720 25 fps H.264 (keyframe every {gop_s:g} s) + 44.1 kHz AAC, {len(clip) / 1e6:.1f} MB: "
            f"fnac.media {statistics.median(ours) * 1000:.0f} ms, ffmpeg CLI {statistics.median(theirs) * 1000:.0f} ms, "
            f"ratio {ratio:.2f}x (target <= 0.5x); same output: frame mean |diff| "
            f"{np.abs(frame.astype(int) - window.frame.astype(int)).mean():.2f} / 255, audio {window.audio.size} "
            f"vs {audio.size} samples, correlation {correlation:.4f}"
        )
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reliability", description=__doc__.split("\n")[0]
    )
    parts = parser.add_subparsers(dest="part", required=True)

    def part(name: str, help: str) -> argparse.ArgumentParser:
        p = parts.add_parser(name, help=help)
        p.add_argument(
            "--model", help="ONNX model to serve (default: FNAC_MODEL, the bundled model, or random)"
        )
        return p

    p = part("malformed", "post the malformed-upload corpus to a live server")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per answer")
    p = part("load", "concurrent closed-loop load")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument(
        "--env", action="append", default=[], help="FNAC_SETTING=value for the server (repeatable)"
    )
    p = part("soak", "long steady load with RSS sampling")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--warmup-s", type=float, default=60.0)
    p.add_argument("--max-growth-per-hour", type=float, default=0.01, help="RSS growth allowed after warm-up")
    p.add_argument("--log-every", type=int, default=0, help="print every Nth RSS sample as it comes (0: off)")
    p.add_argument(
        "--env", action="append", default=[], help="FNAC_SETTING=value for the server (repeatable)"
    )
    p.add_argument("--json", help="write the samples here")
    p = part("kill-train", "SIGKILL fnac train at random points, resume, compare")
    p.add_argument("--kills", type=int, default=12, help="single-process kills")
    p.add_argument("--torchrun-kills", type=int, default=4, help="kills under torchrun --nproc_per_node 2")
    p.add_argument("--kills-per-run", type=int, default=3, help="kills before a run is resumed to its end")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--tolerance", type=float, default=0.0, help="allowed per-epoch metric difference")
    p.add_argument("--seed", type=int, default=random.randrange(2**32))
    p = part("fuzz", "hypothesis over the decoders, then mutated uploads to a live server")
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--media-share", type=float, default=0.5, help="share of the time for the in-process part")
    p.add_argument("--crash-dir", default=os.path.join(tempfile.gettempdir(), "fnac-fuzz"))
    p = part("schemathesis", "schemathesis against the live OpenAPI schema")
    p.add_argument("--seconds", type=float, default=180.0)
    p = part("decode-speed", "fnac.media.decode_clip vs the ffmpeg CLI")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--gop", type=float, nargs="+", default=[2.0, 10.0], help="keyframe interval(s), seconds")
    args = parser.parse_args(argv)

    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    runners = {
        "malformed": run_malformed,
        "load": run_load,
        "soak": run_soak,
        "kill-train": run_kill_train,
        "fuzz": run_fuzz,
        "schemathesis": run_schemathesis,
        "decode-speed": run_decode_speed,
    }
    with tempfile.TemporaryDirectory(prefix=f"fnac-reliability-{args.part}-") as tmp:
        started = time.perf_counter()
        code = runners[args.part](args, Path(tmp))
        print(f"{args.part}: {'PASS' if code == 0 else 'FAIL'} in {time.perf_counter() - started:.0f} s")
        return code


if __name__ == "__main__":
    sys.exit(main())
