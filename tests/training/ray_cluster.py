"""Drives `fnac score --engine ray` on a two-node Ray cluster for tests/training/test_score_ray.py.

Run inside a private network namespace, so that Ray (which binds to the machine's address) stays on loopback:

    unshare -n sh -c 'ip link set lo up && python -m tests.training.ray_cluster SPEC.json REPORT.json'

SPEC names the `fnac score` arguments and a work folder. The script starts a head node and a second node
(`ray start`, one CPU each), then
- "kill": scores the inputs to kill.jsonl and SIGKILLs the model actor's worker process once the first item
  is written, while the run goes on;
- "resume": scores the inputs to resume.jsonl, SIGKILLs the driver once the first item is written, then
  runs the same command again to the end;
and writes what it saw (pids, line counts at the kill, exit codes, output) to REPORT. It asserts nothing:
the test does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

PORT = 6389
TIMEOUT_S = 240


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _wait_for_lines(path: Path, driver: subprocess.Popen, count: int = 1) -> bool:
    """Wait until `path` has `count` lines; False if the driver ended first."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if _lines(path) >= count:
            return True
        if driver.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _model_actor() -> psutil.Process | None:
    """The Ray worker process that hosts the model actor (Ray titles it after the actor's class)."""
    for process in psutil.process_iter(["cmdline"]):
        if any("_ModelActor" in part for part in process.info["cmdline"] or []):
            return process
    return None


def _score(fnac: str, args: list[str], output: Path, log: Path) -> subprocess.Popen:
    command = [
        fnac,
        "score",
        *args,
        "-o",
        str(output),
        "--engine",
        "ray",
        "--ray-address",
        f"127.0.0.1:{PORT}",
    ]
    return subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def kill_actor(fnac: str, args: list[str], work: Path) -> dict:
    output, log = work / "kill.jsonl", work / "kill.log"
    driver = _score(fnac, args, output, log)
    report: dict = {"output": str(output), "log": str(log)}
    if _wait_for_lines(output, driver):
        actor = _model_actor()
        report["lines_at_kill"] = _lines(output)
        report["driver_alive_at_kill"] = driver.poll() is None
        if actor is not None:
            report["killed_pid"] = actor.pid
            actor.send_signal(signal.SIGKILL)
    report["exit_code"] = driver.wait(TIMEOUT_S)
    return report


def interrupt_and_resume(fnac: str, args: list[str], work: Path) -> dict:
    output, log = work / "resume.jsonl", work / "resume.log"
    driver = _score(fnac, args, output, log)
    report: dict = {"output": str(output), "log": str(log)}
    if _wait_for_lines(output, driver):
        report["driver_alive_at_kill"] = driver.poll() is None
        driver.send_signal(signal.SIGKILL)
    driver.wait(TIMEOUT_S)
    report["lines_after_interrupt"] = _lines(output)
    rerun = _score(fnac, args, output, work / "rerun.log")
    report["exit_code"] = rerun.wait(TIMEOUT_S)
    report["rerun_log"] = str(work / "rerun.log")
    return report


def main(spec_path: str, report_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    work = Path(spec["work"])
    bin_dir = Path(sys.executable).parent
    ray, fnac = str(bin_dir / "ray"), str(bin_dir / "fnac")
    env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    os.environ.update(env)
    report: dict = {}
    start = [ray, "start", "--num-cpus", "1", "--disable-usage-stats"]
    try:
        subprocess.run([*start, "--head", "--port", str(PORT), "--include-dashboard", "false"], check=True)
        subprocess.run([*start, "--address", f"127.0.0.1:{PORT}"], check=True)
        report["kill"] = kill_actor(fnac, spec["args"], work)
        report["resume"] = interrupt_and_resume(fnac, spec["args"], work)
    finally:
        subprocess.run([ray, "stop", "--force"], check=False, capture_output=True)
        Path(report_path).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
