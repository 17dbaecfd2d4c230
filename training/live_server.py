"""`fnac serve` in its own process on a free loopback port, for benchmarks and end-to-end tests: one launcher
that waits for /readyz and always stops the server."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    """`fnac serve` (python -m service.cli) in its own process on a loopback port."""

    base: str
    process: subprocess.Popen
    log_path: Path

    def _tree_total(self, measure) -> float | None:
        """`measure(process)` summed over the server and its live children; None once the server is gone."""
        import psutil

        total = 0
        try:
            parent = psutil.Process(self.process.pid)
            for proc in [parent, *parent.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += measure(proc)
        except psutil.NoSuchProcess:
            return None
        return total

    def rss_bytes(self) -> int:
        """Resident memory of the server and all its children (decode workers, resource tracker)."""
        return self._tree_total(lambda proc: proc.memory_info().rss) or 0

    def own_rss_bytes(self) -> int:
        """Resident memory of the server process alone (without its decode workers)."""
        import psutil

        try:
            return psutil.Process(self.process.pid).memory_info().rss
        except psutil.NoSuchProcess:
            return 0

    def cpu_seconds(self) -> float | None:
        """User + system CPU time so far of the server and its live children; None without psutil."""
        try:
            import psutil  # noqa: F401  (optional: only the dev extra has it)
        except ImportError:
            return None
        return self._tree_total(lambda proc: proc.cpu_times().user + proc.cpu_times().system)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@contextlib.contextmanager
def live_server(model: Path, log_path: Path, env: dict[str, str] | None = None, ready_timeout: float = 180):
    """Start the service, yield a LiveServer once /readyz answers 200; SIGTERM (then SIGKILL) at the end."""
    import httpx

    port = free_port()
    environment = {
        **os.environ,
        "FNAC_MODEL": str(model),
        "FNAC_HOST": "127.0.0.1",
        "FNAC_PORT": str(port),
        "FNAC_LOG_LEVEL": "warning",
        **(env or {}),
    }
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli"], cwd=ROOT, env=environment, stdout=log, stderr=log
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready:\n{server.log_tail()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
