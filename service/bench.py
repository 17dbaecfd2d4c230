"""Service benchmark: frame + audio requests on loopback at several concurrencies, batching on and off, next to
the raw ONNX Runtime throughput measured in the same run. `fnac bench service` calls `run_benchmark`.

It prints req/s, p50/p99 latency per setting and the ratio service/raw (raw = inputs/s through the bare
session at the service's max batch).
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from service.runtime import ModelRuntime


def _payload(sample_rate: int, seconds: float) -> dict:
    import av

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
    image = io.BytesIO()
    Image.fromarray(frame).save(image, format="JPEG", quality=90)
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(round(sample_rate * seconds)) / sample_rate)).astype(
        np.float32
    )
    audio = io.BytesIO()
    with av.open(audio, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=sample_rate, layout="mono")
        pcm = (wave * 32767).astype(np.int16)[None, :]
        frame_audio = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame_audio.sample_rate = sample_rate
        for packet in [*stream.encode(frame_audio), *stream.encode()]:
            out.mux(packet)
    return {"image": ("frame.jpg", image.getvalue()), "audio": ("sound.wav", audio.getvalue())}


def raw_throughput(model: str | Path, batch: int, seconds: float = 5.0) -> float:
    """Inputs per second through the bare ONNX Runtime session at `batch`."""
    runtime = ModelRuntime(model)
    size, n = runtime.metadata.image_size, runtime.metadata.n_samples
    images = np.random.default_rng(0).integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
    audio = np.zeros((batch, n), np.float32)
    runtime.warm_up((batch,))
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        runtime.run(images, audio)
        done += batch
    return done / (time.perf_counter() - started)


async def _load(base: str, files: dict, concurrency: int, total: int) -> list[float]:
    import httpx

    latencies: list[float] = []
    remaining = total

    async def worker(client):
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            response = await client.post(f"{base}/localize", files=files)
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies


def _start_server(
    model: str | Path, port: int, max_batch: int, env_extra: dict[str, str]
) -> subprocess.Popen:
    env = {
        **os.environ,
        "FNAC_MODEL": str(model),
        "FNAC_HOST": "127.0.0.1",
        "FNAC_PORT": str(port),
        "FNAC_MAX_BATCH": str(max_batch),
        "FNAC_LOG_LEVEL": "warning",
        **env_extra,
    }
    code = "from service.cli import serve\nif __name__ == '__main__':\n    serve()\n"
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL)


def _wait_ready(base: str, process: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("benchmark server exited during start-up")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("benchmark server not ready in time")


def run_benchmark(
    model: str | Path,
    concurrencies: tuple[int, ...] = (1, 8, 32),
    requests_per_level: int = 200,
    max_batch: int = 8,
    env: dict[str, str] | None = None,
) -> list[dict]:
    """Run the benchmark and print a table; returns one row per (batching, concurrency)."""
    raw = raw_throughput(model, max_batch)
    print(f"raw ONNX Runtime, batch {max_batch}: {raw:.1f} inputs/s")
    runtime = ModelRuntime(model)
    files = _payload(runtime.metadata.sample_rate, runtime.metadata.clip_seconds)
    rows = []
    for batching, batch in (("on", max_batch), ("off", 1)):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        process = _start_server(model, port, batch, env or {})
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base, process)
            asyncio.run(_load(base, files, 4, 16))  # warm the connection pool and decoders
            for concurrency in concurrencies:
                started = time.perf_counter()
                latencies = asyncio.run(_load(base, files, concurrency, requests_per_level))
                rate = len(latencies) / (time.perf_counter() - started)
                p50, p99 = np.percentile(latencies, [50, 99]) * 1000
                row = {
                    "batching": batching,
                    "concurrency": concurrency,
                    "req_per_s": rate,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "service_over_raw": rate / raw,
                }
                rows.append(row)
                print(
                    f"batching {batching:3s} concurrency {concurrency:3d}: {rate:7.1f} req/s  "
                    f"p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  service/raw {rate / raw:.2f}"
                )
        finally:
            process.terminate()
            process.wait(timeout=60)
    return rows


if __name__ == "__main__":
    run_benchmark(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "models" / "default.onnx")
