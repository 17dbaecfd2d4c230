"""The HTTP half of docker/smoke.sh: the running server's answers, checked for values, not only for types.

    python docker/smoke_check.py PORT CLIP_WITH_TONE.mp4 SILENT_CLIP.mp4

Standard library only (it runs on the host, outside the image). Exits non-zero with the first failed check.
What it checks: the fields agree with the model's metadata and the service's rules (score = the heatmap's
peak x tau; `sounding` = score at or above the threshold in use, for audible audio; boxes inside the frame, at
least one when sounding); the same upload gives the same answer twice; a silent clip is never sounding;
garbage is a typed 4xx.
"""

from __future__ import annotations

import json
import math
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

FRAME = (320, 240)


def post(port: str, field: str, filename: str, payload: bytes) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/localize",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def check(condition: bool, message: str) -> None:
    if not condition:
        sys.exit(f"check failed: {message}")


def check_answer(body: dict, model: dict, name: str) -> None:
    """The fields of one answer agree with each other and with the model's metadata."""
    missing = {"heatmap", "boxes", "score", "sounding", "audio_level_dbfs"} - body.keys()
    check(not missing, f"{name}: response lacks {sorted(missing)}: {sorted(body)}")
    values = body["heatmap"]["values"]
    h, w = body["heatmap"]["shape"]
    check(len(values) == h and all(len(row) == w for row in values), f"{name}: heatmap values vs shape")
    if model.get("heatmap_size"):
        check(
            h == w == model["heatmap_size"],
            f"{name}: heatmap {h}x{w}, the model says {model['heatmap_size']}",
        )
    peak = max(max(row) for row in values)
    check(
        math.isclose(body["score"], peak * model["tau"], abs_tol=1e-3),
        f"{name}: score {body['score']} is not the heatmap's peak {peak} x tau {model['tau']}",
    )
    audible = body["audio_level_dbfs"] > -60.0
    expected = audible and body["score"] >= model["sounding_threshold"]
    check(
        body["sounding"] is expected,
        f"{name}: sounding {body['sounding']} with score {body['score']}, threshold "
        f"{model['sounding_threshold']} and audio at {body['audio_level_dbfs']} dBFS",
    )
    check(bool(body["boxes"]) or not body["sounding"], f"{name}: sounding, but no box")
    check(
        (body.get("width"), body.get("height")) == FRAME,
        f"{name}: frame size {body.get('width')}x{body.get('height')}",
    )
    for box in body["boxes"]:
        check(0 <= box["x0"] < box["x1"] <= FRAME[0] and 0 <= box["y0"] < box["y1"] <= FRAME[1], f"box {box}")


def main(port: str, clip_path: str, silent_path: str) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/model", timeout=30) as response:
        model = json.load(response)
    clip = Path(clip_path).read_bytes()

    status, body = post(port, "video", "clip.mp4", clip)
    check(status == 200, f"POST /localize answered {status}: {body}")
    check_answer(body, model, "tone clip")
    check(body["audio_level_dbfs"] > -20.0, f"the tone clip's level is {body['audio_level_dbfs']} dBFS")
    again = post(port, "video", "clip.mp4", clip)[1]
    check(again["heatmap"]["values"] == body["heatmap"]["values"], "the same clip gave a different heatmap")
    print(
        f"localize: 200, heatmap {body['heatmap']['shape']}, {len(body['boxes'])} box(es), score "
        f"{body['score']:.3f} (threshold {model['sounding_threshold']:.3f}), sounding {body['sounding']}"
    )

    status, silent = post(port, "video", "silent.mp4", Path(silent_path).read_bytes())
    check(status == 200, f"the silent clip answered {status}: {silent}")
    check_answer(silent, model, "silent clip")
    check(silent["sounding"] is False, f"the silent clip is sounding: {silent}")
    print(f"silent clip: sounding {silent['sounding']}, level {silent['audio_level_dbfs']} dBFS")

    # Garbage must be a typed client error, not a crash.
    status, junk = post(port, "video", "junk.mp4", b"this is not a video" * 100)
    check(400 <= status < 500 and "code" in junk.get("error", {}), f"junk upload answered {status}: {junk}")
    print(f"junk upload: {status} {junk['error']['code']}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
