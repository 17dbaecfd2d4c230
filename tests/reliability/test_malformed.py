"""The malformed-upload corpus against a real server: every bad upload gets a 4xx JSON error in time, no 5xx,
the server stays up and keeps answering good requests, and its memory does not grow round after round."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from benchmarks import malformed, reliability

ROUNDS = 3
ANSWER_S = 15.0  # per upload: decode timeout (10 s) + slack for a busy machine


@pytest.fixture(scope="module")
def corpus():
    return malformed.build_corpus(reliability.SMALL_LIMITS)


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
        statuses = reliability.status_counts(server.base)  # all routes: a 413 before routing is "unmatched"
        assert httpx.get(f"{server.base}/healthz", timeout=10).status_code == 200
        _, files = reliability.good_requests()[0]
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
        _, files = reliability.good_requests()[1]
        meanwhile = httpx.post(f"{server.base}/localize", files=files, timeout=30)
        meanwhile_done = time.perf_counter()
        sender.join()
    assert meanwhile.status_code == 200
    # the slow client was still sending when the other request had its answer
    assert result["outcome"].status == 422 and result["finished"] > meanwhile_done
