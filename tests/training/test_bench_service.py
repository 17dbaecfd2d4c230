"""`fnac bench service` at tiny scale: the machinery runs and reports every level (no timing asserts)."""

import json
import math

from fnac.cli import main
from training import bench_service


def test_bench_service_reports_raw_and_both_batching_modes(tiny_onnx_model, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "service", "--model", str(tiny_onnx_model), "--duration", "1", "--concurrency", "1,4"]
    assert main([*argv, "--json", str(out)]) == 0

    result = json.loads(out.read_text())
    assert result["max_batch"] > 1 and result["raw_inputs_per_s_batch_1"] > 0
    levels = {(level["batching"], level["concurrency"]): level for level in result["levels"]}
    assert set(levels) == {("on", 1), ("on", 4), ("off", 1), ("off", 4)}
    for (batching, concurrency), level in levels.items():
        assert level["max_batch"] == (result["max_batch"] if batching == "on" else 1)
        assert level["requests"] > 0 and level["failed"] == 0, level["statuses"]
        assert level["p50_ms"] <= level["p99_ms"]
        # on and off at one concurrency share the raw measurement taken right before them
        assert level["raw_inputs_per_s"] == levels[("on", concurrency)]["raw_inputs_per_s"] > 0
        assert math.isclose(level["service_over_raw"], level["req_per_s"] / level["raw_inputs_per_s"])
    table = capsys.readouterr().out
    assert "bare ONNX Runtime" in table and "batching on" in table and "batching off" in table
    throughput, cpu = table.split("CPU ms per request")
    rows = [line.split() for line in throughput.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1", "4"]
    # the CPU table: one row per level, the server's cost per request above the bare model's per input
    cpu_rows = [line.split() for line in cpu.splitlines() if line.strip()[:1].isdigit()]
    assert sorted((row[0], row[1]) for row in cpu_rows) == [
        ("1", "off"),
        ("1", "on"),
        ("4", "off"),
        ("4", "on"),
    ]
    for level in result["levels"]:
        assert level["server_cpu_ms_per_request"] > 0 and level["client_cpu_ms_per_request"] > 0
        assert level["raw_cpu_ms_per_input"] > 0
    # the "own" column is the server's cost minus the model's, as the JSON has them
    by_row = {(level["concurrency"], level["batching"]): level for level in result["levels"]}
    for row in cpu_rows:
        level = by_row[(int(row[0]), row[1])]
        own = level["server_cpu_ms_per_request"] - level["raw_cpu_ms_per_input"]
        assert math.isclose(float(row[4]), round(own, 1), abs_tol=0.051), (row, level)


def test_missing_model_falls_back_to_an_exported_random_network(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("FNAC_MODEL", str(tmp_path / "missing.onnx"))
    monkeypatch.setattr("model.fnac.FNAC", lambda: tiny_model)  # the paper network, shrunk for the test
    path, source = bench_service.default_model(tmp_path)
    assert path.is_file() and path.parent == tmp_path
    assert "missing.onnx missing" in source and "randomly initialised" in source


def test_missing_explicit_model_is_a_clear_error(tmp_path, capsys):
    assert main(["bench", "service", "--model", str(tmp_path / "nope.onnx")]) == 2
    assert "nope.onnx" in capsys.readouterr().err


def test_load_generator_counts_dropped_connections_and_keeps_going():
    # A server that answers every other request with a valid JSON localization and drops the connection on
    # the others: the clients reconnect, count the drops as status 0 and time only the answers.
    import asyncio

    answer = json.dumps({"score": 0.5, "boxes": []}).encode()
    seen = 0

    async def handle(reader, writer):
        nonlocal seen
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(
                        line
                        for line in head.decode().split("\r\n")
                        if line.lower().startswith("content-length")
                    ).split(":")[1]
                )
                await reader.readexactly(length)
                seen += 1
                if seen % 2 == 0:
                    writer.close()
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            files = {"image": ("f.jpg", b"\xff\xd8 not really"), "audio": ("a.wav", b"RIFF....WAVE")}
            return await bench_service._load(f"http://127.0.0.1:{port}", files, 2, 0.5)

    level = asyncio.run(run())
    assert level["requests"] > 0 and level["statuses"][200] == level["requests"]
    assert level["failed"] == level["statuses"][0] > 0
