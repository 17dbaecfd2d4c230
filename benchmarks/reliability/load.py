"""The `load` and `soak` parts: concurrent closed-loop clients against a live server, and a long steady load
with the server's RSS sampled."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.reliability.common import good_requests, resolve_model
from training.live_server import live_server


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
