"""SIGTERM under load on a real server: requests already in flight complete with 200, new connections are
refused (or answered 503), and the process exits within 10 s.

The in-flight requests are valid clips uploaded slowly (~2 s each), so they are certainly mid-request when the
signal arrives, however fast or slow the machine is."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from benchmarks import malformed

IN_FLIGHT = 6


def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_quickly(start_server):
    body, content_type = malformed.multipart([("video", "clip.mp4", malformed.encode_clip(4.0), "video/mp4")])
    upload = malformed.BadUpload(
        "slow_valid_clip", "", frozenset(), body, {"Content-Type": content_type},
        chunk_bytes=len(body) // 20 + 1, chunk_delay_s=0.1,
    )  # fmt: skip
    with start_server(FNAC_DECODE_WORKERS="2", FNAC_SHUTDOWN_TIMEOUT_S="8") as server:
        answers: list[tuple[int | str, float]] = []

        def post() -> None:
            with httpx.Client(timeout=30) as client:
                outcome = malformed.send(client, server.base, upload)
            answers.append((outcome.status or outcome.error, time.monotonic()))

        clients = [threading.Thread(target=post) for _ in range(IN_FLIGHT)]
        for client in clients:
            client.start()
        time.sleep(0.6)  # every upload is under way, none complete
        assert not answers, "requests finished before the signal: make them longer"
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        time.sleep(0.3)
        late = []  # new clients after the signal
        for _ in range(3):
            try:
                late.append(httpx.get(f"{server.base}/v1/model", timeout=5).status_code)
            except httpx.TransportError as exc:
                late.append(type(exc).__name__)

        server.process.wait(timeout=15)
        exited_after = time.monotonic() - signalled
        for client in clients:
            client.join(timeout=30)

    assert [status for status, _ in answers] == [200] * IN_FLIGHT, answers
    assert all(done > signalled for _, done in answers)  # they really were in flight at SIGTERM
    assert all(status in ("ConnectError", 503) for status in late), late
    assert exited_after <= 10.0, exited_after
    # uvicorn re-raises the signal once its graceful shutdown is done: exit status 143 (-SIGTERM), as usual
    assert server.process.returncode in (0, -signal.SIGTERM), server.log_tail()
    assert "Traceback" not in server.log_tail(100_000), server.log_tail()
