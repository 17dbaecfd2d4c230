"""A real server for the reliability tests: `python -m service.cli` on a free loopback port, serving the tiny
exported FNAC network, with small FNAC_* limits so that limit-breaking uploads stay cheap to build."""

from __future__ import annotations

import contextlib

import pytest

from benchmarks.reliability.common import SMALL_LIMITS, limit_env
from training.live_server import live_server


@pytest.fixture(scope="session")
def start_server(tiny_onnx_model, tmp_path_factory):
    """start_server(**env) -> context manager yielding a LiveServer (stopped on exit)."""

    @contextlib.contextmanager
    def start(**env):
        log = tmp_path_factory.mktemp("server") / "server.log"
        settings = {**limit_env(SMALL_LIMITS), "FNAC_DECODE_TIMEOUT_S": "10", **env}
        with live_server(tiny_onnx_model, log, settings) as server:
            yield server

    return start
