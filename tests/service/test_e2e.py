"""The service as users run it: `service.cli.serve` in its own process, real uvicorn on loopback."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import frame_with_square, make_clip, tone

REPO = Path(__file__).resolve().parents[2]

# Runs the server with `import torch` made impossible: the serving path must not need it.
SERVER = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not allowed in the service")
sys.meta_path.insert(0, NoTorch())
from service.cli import serve
serve()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(toy_onnx_model, tmp_path):
    port = _free_port()
    log_path = tmp_path / "server.log"
    env = {
        **os.environ,
        "FNAC_MODEL": str(toy_onnx_model),
        "FNAC_HOST": "127.0.0.1",
        "FNAC_PORT": str(port),
        "FNAC_DECODE_WORKERS": "1",
        "FNAC_MAX_BATCH": "4",
        "FNAC_MAX_WAIT_MS": "1500",  # a lone request waits 1.5 s for company: long enough to be "in flight"
        "FNAC_DISPATCH_WHEN_IDLE": "false",
    }
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-c", SERVER], cwd=REPO, env=env, stderr=log, stdout=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            pytest.fail(f"server exited early:\n{log_path.read_text()}")
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail(f"server not ready in 60 s:\n{log_path.read_text()}")
    yield base, process, log_path
    if process.poll() is None:
        process.kill()
        process.wait()


def test_real_server_localizes_and_shuts_down_gracefully(server):
    base, process, log_path = server
    clip = make_clip([frame_with_square(160, 120, (100, 20, 140, 60))] * 30, tone(3.0, 44100))
    outcome = {}

    def request():
        outcome["response"] = httpx.post(
            f"{base}/localize",
            files={"video": ("clip.mp4", clip)},
            headers={"X-Request-ID": "e2e-1"},
            timeout=30,
        )

    started = time.monotonic()
    client = threading.Thread(target=request)
    client.start()
    time.sleep(0.8)  # decoded by now, waiting in the batcher
    process.send_signal(signal.SIGTERM)
    client.join(timeout=30)
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete, so the parent sees the signal.
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)

    response = outcome["response"]
    assert response.status_code == 200, response.text  # the in-flight request was finished, not dropped
    assert time.monotonic() - started >= 1.4
    body = response.json()
    # It waited its 1.5 s for company in the batcher, and not much longer (a wait 10x too long is 15 s).
    assert 1400 <= body["timings"]["queue_ms"] < 4000
    assert body["sounding"] is True and body["boxes"][0]["x0"] > 80
    assert response.headers["x-request-id"] == "e2e-1"

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    access = [
        entry for entry in lines if entry.get("logger") == "fnac.access" and entry.get("route") == "/localize"
    ]
    assert access and access[0]["request_id"] == "e2e-1" and access[0]["status"] == 200
    assert any(
        "CPUExecutionProvider" in entry["message"] for entry in lines if entry["logger"] == "fnac.runtime"
    )
    assert any(entry["message"] == "Application shutdown complete." for entry in lines)
    assert "Traceback" not in log_path.read_text()


def test_missing_model_fails_at_startup_with_a_clear_message(tmp_path):
    env = {**os.environ, "FNAC_MODEL": str(tmp_path / "nope.onnx")}
    result = subprocess.run(
        [sys.executable, "-c", "from service.cli import serve; serve()"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "nope.onnx" in result.stderr and "--model" in result.stderr and "FNAC_MODEL" in result.stderr


def test_service_modules_do_not_import_torch():
    code = (
        "import sys, service.main, service.cli, service.decoding, fnac.media, fnac.postprocess, fnac.pipeline;"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
