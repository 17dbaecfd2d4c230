"""The malformed-upload corpus against a real server: every bad upload gets a 4xx JSON error in time, no 5xx,
the server stays up and keeps answering good requests, and its memory does not grow round after round."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from benchmarks import malformed
from benchmarks.reliability.common import SMALL_LIMITS, good_requests, status_counts

ROUNDS = 3
ANSWER_S = 15.0  # per upload: decode timeout (10 s) + slack for a busy machine


@pytest.fixture(scope="module")
def corpus():
    return malformed.build_corpus(SMALL_LIMITS)


def test_corpus_covers_the_kinds_the_issue_lists(corpus):
    kinds = {upload.kind for upload in corpus}
    assert len(kinds) == len(corpus) >= 30
    for needed in ["empty_video", "clip_truncated_0.5", "clip_header_corrupt", "random_video", "polyglot_png_mp4",
                   "wrong_field_name", "image_in_audio_field", "audio_in_image_field", "clip_without_audio",
                   "audio_in_video_field", "zero_length_audio", "one_hour_audio", "image_20k", "png_bomb",
                   "jpeg_bomb", "rate_1hz", "body_over_limit", "many_text_parts", "slow_upload"]:  # fmt: skip
        assert needed in kinds
    assert all(code >= 400 and code < 500 for upload in corpus for code in upload.expect)


def test_every_bad_upload_gets_a_4xx_json_error_and_the_server_survives(start_server, corpus):
    with start_server(FNAC_DECODE_WORKERS="2") as server:
        rss_mib = [server.rss_bytes() / 2**20]
        wrong = []
        for _ in range(ROUNDS):
            for upload, outcome in zip(
                corpus, malformed.send_all(server.base, corpus, ANSWER_S), strict=True
            ):
                if not (outcome.clean_4xx and outcome.status in upload.expect and outcome.seconds < ANSWER_S):
                    wrong.append((upload.kind, sorted(upload.expect), outcome))
            rss_mib.append(server.rss_bytes() / 2**20)
        statuses = status_counts(server.base)  # all routes: a 413 before routing is "unmatched"
        assert httpx.get(f"{server.base}/healthz", timeout=10).status_code == 200
        _, files = good_requests()[0]
        good = httpx.post(f"{server.base}/localize", files=files, timeout=60)
        assert good.status_code == 200 and good.json()["heatmap"]["values"], good.text[:500]
        assert server.alive(), server.log_tail()

    assert not wrong, "\n".join(map(str, wrong))
    assert not [s for s in statuses if s.startswith("5")], statuses
    # every upload reached the app and was counted (the only other requests so far: /readyz polls, 200 or 503)
    assert sum(n for status, n in statuses.items() if status.startswith("4")) == ROUNDS * len(corpus)
    # Round 1 warms up (imports in the decode workers, allocator pools); after it memory must stay flat.
    assert rss_mib[-1] - rss_mib[1] < max(0.10 * rss_mib[1], 40), rss_mib


def test_a_slow_upload_does_not_hold_up_other_clients(start_server):
    body, content_type = malformed.multipart([("video", "clip.mp4", bytes(4096), "video/mp4")])
    slow = malformed.BadUpload(
        "slow", "", frozenset({422}), body, {"Content-Type": content_type}, chunk_bytes=128, chunk_delay_s=0.1
    )  # ~3 s
    with start_server(FNAC_DECODE_WORKERS="1") as server:
        result = {}
        sender = threading.Thread(
            target=lambda: result.update(
                outcome=malformed.send_all(server.base, [slow], 30)[0], finished=time.perf_counter()
            )
        )
        sender.start()
        time.sleep(0.5)
        _, files = good_requests()[1]
        meanwhile = httpx.post(f"{server.base}/localize", files=files, timeout=30)
        meanwhile_done = time.perf_counter()
        sender.join()
    assert meanwhile.status_code == 200
    # the slow client was still sending when the other request had its answer
    assert result["outcome"].status == 422 and result["finished"] > meanwhile_done


def _raw_post(
    base: str, head_extra: str, body_parts: list[tuple[bytes, float]], read_timeout: float
) -> tuple:
    """POST /localize over a raw socket, sending each (bytes, delay before) part; returns (status, body, seconds)."""
    import select
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(base)
    started = time.perf_counter()
    with socket.create_connection((url.hostname, url.port), timeout=read_timeout) as sock:
        sock.sendall(
            (
                f"POST /localize HTTP/1.1\r\nHost: {url.hostname}\r\n"
                f"Content-Type: multipart/form-data; boundary=b\r\n{head_extra}\r\n"
            ).encode()
        )
        try:
            for data, delay in body_parts:
                if select.select([sock], [], [], delay)[0]:
                    break  # the server answered (and will close) before we finished sending
                sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = b""
        while True:  # the head, then exactly Content-Length bytes of body (or until the server closes)
            head, sep, body = reply.partition(b"\r\n\r\n")
            if sep:
                length = [
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(body) >= length[0]:
                    break
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body, time.perf_counter() - started


def test_a_stalled_upload_is_answered_408_and_the_server_stays_up(start_server):
    part = b'--b\r\nContent-Disposition: form-data; name="video"; filename="x.mp4"\r\n\r\n' + bytes(100)
    with start_server(FNAC_UPLOAD_IDLE_TIMEOUT_S="1", FNAC_UPLOAD_TIMEOUT_S="3") as server:
        # declares 10,000 bytes, sends 170, then nothing
        status, body, seconds = _raw_post(server.base, "Content-Length: 10000\r\n", [(part, 0)], 15)
        assert status == 408 and b"upload_timeout" in body and 0.9 < seconds < 5
        # a trickle (a few bytes every 0.5 s) beats the idle timeout but not the total one
        trickle = [(part[:60], 0)] + [(b"x" * 8, 0.5)] * 20
        status, body, seconds = _raw_post(server.base, "Content-Length: 10000\r\n", trickle, 15)
        assert status == 408 and b"longer than 3 s" in body and 2.9 < seconds < 8
        assert httpx.get(f"{server.base}/healthz", timeout=5).status_code == 200
