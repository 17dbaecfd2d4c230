"""`fnac bench service`: the HTTP service on loopback against the bare ONNX Runtime session, in one run.

Every request is what a user sends: a 640 x 360 JPEG frame and a 3 s mono 44.1 kHz WAV as multipart to
`POST /localize` (JSON answer), so decoding, resampling, batching, post-processing and HTTP are all inside the
timing. For each concurrency level, the same model first runs bare through ONNX Runtime at the service's max
batch (raw inputs/s, the most the model gives on this machine); then closed-loop clients keep that many
requests in flight for `--duration` seconds, against a server with micro-batching on (FNAC_MAX_BATCH at its
default) and then one with it off (FNAC_MAX_BATCH=1). `service/raw` is req/s over that level's raw inputs/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from fnac.errors import FnacError
from training.live_server import live_server

FRAME_SIZE = (640, 360)
UPLOAD_SAMPLE_RATE = 44100


def default_model(directory: Path) -> tuple[Path, str]:
    """The configured model (FNAC_MODEL or the bundled one) or, if that file is missing, a random paper network."""
    from service.config import Settings

    configured = Settings().model
    if Path(configured).is_file():
        return Path(configured), str(configured)
    try:
        import torch

        from model.export import export_onnx
        from model.fnac import FNAC
    except ImportError as exc:
        raise RuntimeError(
            f"no model at {configured}; pass --model M.onnx (exporting a random network needs the train extra: {exc})"
        ) from None
    torch.manual_seed(0)
    path = directory / "fnac-random-paper.onnx"
    export_onnx(FNAC().eval(), path, {"model_name": "fnac-random-paper", "training_data": "random init"})
    return path, f"{configured} missing; randomly initialised paper-size FNAC exported to {path}"


def request_files(clip_seconds: float) -> dict[str, tuple[str, bytes]]:
    """One frame + audio upload: a JPEG of a simple scene and a WAV tone with a little noise."""
    import av
    from PIL import Image

    width, height = FRAME_SIZE
    rows, cols = np.mgrid[0:height, 0:width]
    frame = np.stack([cols * 255 // width, rows * 255 // height, np.full_like(rows, 96)], axis=-1)
    frame[100:220, 380:520] = (230, 200, 40)  # a "sound source"
    image = io.BytesIO()
    Image.fromarray(frame.astype(np.uint8)).save(image, format="JPEG", quality=90)

    rng = np.random.default_rng(0)
    t = np.arange(round(UPLOAD_SAMPLE_RATE * clip_seconds)) / UPLOAD_SAMPLE_RATE
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(t.size)
    pcm = (np.clip(wave, -1, 1) * 32767).astype(np.int16)[None, :]
    audio = io.BytesIO()
    with av.open(audio, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=UPLOAD_SAMPLE_RATE, layout="mono")
        samples = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        samples.sample_rate = UPLOAD_SAMPLE_RATE
        for packet in [*stream.encode(samples), *stream.encode()]:
            out.mux(packet)
    return {"image": ("frame.jpg", image.getvalue()), "audio": ("sound.wav", audio.getvalue())}


def raw_throughput(runtime, batch: int, seconds: float) -> tuple[float, float]:
    """Inputs per second through the bare ONNX Runtime session at `batch`, after one warm-up run, and the
    CPU milliseconds (all threads) each input cost."""
    size, n = runtime.metadata.image_size, runtime.metadata.n_samples
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal((batch, n))).astype(np.float32)
    runtime.run(images, audio)
    done, started, cpu = 0, time.perf_counter(), time.process_time()
    while done == 0 or time.perf_counter() - started < seconds:
        runtime.run(images, audio)
        done += batch
    return done / (time.perf_counter() - started), 1000 * (time.process_time() - cpu) / done


def multipart_request(base: str, files: dict[str, tuple[str, bytes]]) -> bytes:
    """The whole `POST /localize` HTTP/1.1 request for `files`, encoded once: the load generator resends these
    bytes, so its own CPU cost per request stays far below the server's (it shares the machine)."""
    boundary = "fnac-bench-" + os.urandom(8).hex()
    body = bytearray()
    for field, (filename, content) in files.items():
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        body += content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    host = urlsplit(base).netloc
    head = (
        f"POST /localize HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + bytes(body)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server keeps the connection open (responses carry Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }
    if "content-length" not in headers:
        raise RuntimeError(f"response without Content-Length (status {status}): {headers}")
    body = await reader.readexactly(int(headers["content-length"]))
    return status, body, headers.get("connection", "").lower() != "close"


async def _load(base: str, files: dict, concurrency: int, seconds: float) -> dict:
    """`concurrency` closed-loop clients, each on its own keep-alive connection, posting `files` until
    `seconds` have passed. Every 200 answer must be the JSON of a localization."""
    request = multipart_request(base, files)
    address = urlsplit(base)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    checked = False

    async def client_loop() -> None:
        nonlocal checked
        connection = None
        try:
            while time.perf_counter() < deadline:
                if connection is None:
                    connection = await asyncio.open_connection(address.hostname, address.port)
                reader, writer = connection
                sent = time.perf_counter()
                try:
                    writer.write(request)
                    await writer.drain()
                    status, body, keep_alive = await asyncio.wait_for(_read_response(reader), timeout=120)
                except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
                    status, body, keep_alive = 0, b"", False  # 0: no answer (connection lost or 120 s)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(time.perf_counter() - sent)
                    if not checked:  # the load generator measures answers, not errors that look like them
                        answer = json.loads(body)
                        if "score" not in answer or "boxes" not in answer:
                            raise RuntimeError(f"unexpected 200 body: {body[:200]!r}")
                        checked = True
                if not keep_alive:
                    writer.close()
                    connection = None
        finally:
            if connection is not None:
                connection[1].close()

    started, client_cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    elapsed, client_cpu = time.perf_counter() - started, time.process_time() - client_cpu
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000 if latencies else (float("nan"), float("nan"))
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "failed": sum(count for status, count in statuses.items() if status != 200),
        "statuses": statuses,
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "client_cpu_ms_per_request": 1000 * client_cpu / max(1, len(latencies)),
    }


@contextlib.contextmanager
def running_server(model: Path, max_batch: int, threads: int, log_path: Path, timeout: float = 180):
    """`fnac serve` with the given micro-batch limit; yields the LiveServer once /readyz is 200."""
    env = {"FNAC_MAX_BATCH": str(max_batch)}
    if threads:
        env["FNAC_INTRA_OP_THREADS"] = str(threads)
    with live_server(model, log_path, env, ready_timeout=timeout) as server:
        yield server


def _measured_level(server, files: dict, concurrency: int, seconds: float) -> dict:
    """One closed-loop level against `server`, with the server's CPU time per answered request."""
    cpu_before = server.cpu_seconds()
    level = asyncio.run(_load(server.base, files, concurrency, seconds))
    cpu_after = server.cpu_seconds()
    if cpu_before is not None and cpu_after is not None and level["requests"]:
        level["server_cpu_ms_per_request"] = 1000 * (cpu_after - cpu_before) / level["requests"]
    return level


def run_benchmark(
    model: Path,
    *,
    concurrencies: tuple[int, ...] = (1, 8, 32),
    seconds: float = 10.0,
    threads: int = 0,
    work_dir: Path,
) -> dict:
    """Raw ORT throughput and the service with batching on and off, interleaved per concurrency level."""
    from fnac.runtime import ModelRuntime
    from service.config import Settings

    max_batch = Settings().max_batch  # FNAC_MAX_BATCH when set (the servers below get the same)
    runtime = ModelRuntime(model, intra_op_threads=threads)
    providers, metadata = runtime.providers, runtime.metadata
    raw_seconds = min(seconds, 5.0)
    raw_batch_1, _ = raw_throughput(runtime, 1, raw_seconds)
    files = request_files(metadata.clip_seconds)
    levels = []
    with contextlib.ExitStack() as stack:
        # Both servers stay up (an idle one costs no CPU) so that each level measures raw, batching on and
        # batching off back to back: on a shared machine, load that comes and goes hits all three alike.
        servers = {
            batching: stack.enter_context(
                running_server(model, batch, threads, work_dir / f"server-batching-{batching}.log")
            )
            for batching, batch in (("on", max_batch), ("off", 1))
        }
        # What the servers really run on, read back from their sessions (/readyz), not assumed.
        import httpx

        readiness = {
            batching: httpx.get(f"{server.base}/readyz", timeout=10).json()
            for batching, server in servers.items()
        }
        for server in servers.values():
            # Warm-up, not measured: connections, decode workers, ORT's first runs at each batch size.
            asyncio.run(_load(server.base, files, max(concurrencies), min(seconds, 2.0)))
        for concurrency in concurrencies:
            raw, raw_cpu_ms = raw_throughput(runtime, max_batch, raw_seconds)
            for batching, server in servers.items():
                level = _measured_level(server, files, concurrency, seconds)
                level |= {
                    "batching": batching,
                    "max_batch": max_batch if batching == "on" else 1,
                    "raw_inputs_per_s": raw,
                    "raw_cpu_ms_per_input": raw_cpu_ms,
                    "service_over_raw": level["req_per_s"] / raw,
                }
                levels.append(level)
    return {
        "model": metadata.model_name,
        "providers": providers,
        "server_providers": readiness["on"].get("providers"),
        "server_runtime": readiness["on"].get("runtime"),
        "image_size": metadata.image_size,
        "cpu_count": os.cpu_count(),
        "intra_op_threads": threads,
        "seconds_per_level": seconds,
        "max_batch": max_batch,
        "raw_inputs_per_s_batch_1": raw_batch_1,
        "levels": levels,
    }


def format_table(result: dict) -> str:
    max_batch = result["max_batch"]
    lines = [
        f"raw = inputs/s through the bare ONNX Runtime session at batch {max_batch}, measured right before "
        f"each concurrency level (batch 1: {result['raw_inputs_per_s_batch_1']:.1f} inputs/s)",
        "",
        f"{'':>11} {'':>7} | {'batching on (max batch ' + str(max_batch) + ')':^40} | "
        f"{'batching off (max batch 1)':^40} |",
        f"{'concurrency':>11} {'raw':>7} | {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'svc/raw':>7} {'fail':>5} "
        f"| {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'svc/raw':>7} {'fail':>5} | {'on/off':>6}",
    ]
    by_key = {(level["batching"], level["concurrency"]): level for level in result["levels"]}
    for concurrency in dict.fromkeys(level["concurrency"] for level in result["levels"]):
        on, off = by_key[("on", concurrency)], by_key[("off", concurrency)]
        cells = [
            f"{level['req_per_s']:7.1f} {level['p50_ms']:8.1f} {level['p99_ms']:8.1f} "
            f"{level['service_over_raw']:7.2f} {level['failed']:5d}"
            for level in (on, off)
        ]
        ratio = on["req_per_s"] / off["req_per_s"] if off["req_per_s"] else float("nan")
        lines.append(
            f"{concurrency:>11} {on['raw_inputs_per_s']:7.1f} | {cells[0]} | {cells[1]} | {ratio:6.2f}"
        )
    cpu_rows = [level for level in result["levels"] if "server_cpu_ms_per_request" in level]
    if cpu_rows:
        lines += [
            "",
            "CPU ms per request (all threads and processes): the bare model per input, the server (decode "
            "workers included), own = server - model (the service's own work), the load-generating client",
            f"{'concurrency':>11} {'batching':>8} {'model':>7} {'server':>7} {'own':>7} {'client':>7}",
        ]
        lines += [
            f"{level['concurrency']:>11} {level['batching']:>8} {level['raw_cpu_ms_per_input']:7.1f} "
            f"{level['server_cpu_ms_per_request']:7.1f} "
            f"{level['server_cpu_ms_per_request'] - level['raw_cpu_ms_per_input']:7.1f} "
            f"{level['client_cpu_ms_per_request']:7.1f}"
            for level in cpu_rows
        ]
    return "\n".join(lines)


def main(args) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # live_server polls /readyz with httpx
    concurrencies = tuple(int(c) for c in str(getattr(args, "concurrency", "1,8,32")).split(","))
    with tempfile.TemporaryDirectory(prefix="fnac-bench-service-") as tmp:
        work_dir = Path(tmp)
        if args.model and not Path(args.model).is_file():
            raise FnacError(f"model file {args.model!r} not found")
        try:
            model, source = (Path(args.model), args.model) if args.model else default_model(work_dir)
            print(f"model: {source}", flush=True)
            result = run_benchmark(
                model,
                concurrencies=concurrencies,
                seconds=args.duration,
                threads=args.threads,
                work_dir=work_dir,
            )
        except RuntimeError as exc:  # no model to export, or a server that did not start (its log included)
            raise FnacError(str(exc)) from None
    result["model_source"] = source
    print(
        f"{result['model']} ({result['image_size']} px) on {', '.join(result['providers'])} (server: "
        f"{', '.join(result['server_providers'] or ['?'])}), "
        f"{result['cpu_count']} CPUs, intra-op threads {args.threads or 'default'}; "
        f"{args.duration:g} s per level; requests: {FRAME_SIZE[0]}x{FRAME_SIZE[1]} JPEG + "
        f"{UPLOAD_SAMPLE_RATE} Hz WAV, JSON answer; server and clients share this machine"
    )
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
