"""The `malformed`, `fuzz` and `schemathesis` parts: hostile uploads against a live server with small limits
(the malformed-upload corpus, mutated inputs, the OpenAPI schema's generated cases), and the decoders fuzzed
in this process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from benchmarks import malformed
from benchmarks.reliability.common import (
    SMALL_LIMITS,
    good_requests,
    limit_env,
    metric_value,
    resolve_model,
    status_counts,
)
from training.live_server import live_server


def run_malformed(args, work: Path) -> int:
    """The corpus, `--rounds` times, against a server with small limits."""
    model, source = resolve_model(args.model, work)
    corpus = malformed.build_corpus(SMALL_LIMITS)
    print(f"model: {source}\ncorpus: {len(corpus)} kinds x {args.rounds} rounds, limits {SMALL_LIMITS}")
    env = {**limit_env(SMALL_LIMITS), "FNAC_DECODE_TIMEOUT_S": "10"}
    failures = []
    with live_server(model, work / "server.log", env) as server:
        import httpx

        rss = [server.rss_bytes()]
        worst: dict[str, malformed.Outcome] = {}
        for _ in range(args.rounds):
            for outcome in malformed.send_all(server.base, corpus, timeout_s=args.timeout):
                if outcome.kind not in worst or outcome.seconds > worst[outcome.kind].seconds:
                    worst[outcome.kind] = outcome
                if not outcome.clean_4xx or outcome.seconds > args.timeout:
                    failures.append(outcome)
            rss.append(server.rss_bytes())
        healthz = httpx.get(f"{server.base}/healthz", timeout=10).status_code
        kind, files = good_requests()[0]
        good = httpx.post(f"{server.base}/localize", files=files, timeout=60).status_code
        restarts = metric_value(server.base, "fnac_decode_worker_restarts_total")
        statuses = status_counts(server.base)
    expected = {u.kind: u.expect for u in corpus}
    print(f"\n{'kind':<28} {'status':>6} {'code':<22} {'max s':>6}")
    for name, outcome in worst.items():
        flag = "" if outcome.status in expected[name] else f"  (expected {sorted(expected[name])})"
        print(f"{name:<28} {outcome.status!s:>6} {outcome.code!s:<22} {outcome.seconds:6.2f}{flag}")
    five = sum(n for s, n in statuses.items() if s.startswith("5"))
    print(f"\nserver statuses (from /metrics): {dict(sorted(statuses.items()))}; 5xx: {five:g}")
    print(f"decode worker restarts: {restarts:g}; after: healthz {healthz}, good {kind} request {good}")
    mib = [r / 2**20 for r in rss]
    print("RSS server + workers per round (MiB): " + " ".join(f"{m:.0f}" for m in mib))
    growth = (mib[-1] - mib[1]) / mib[1] if len(mib) > 2 else 0.0
    print(f"RSS growth from round 1 to round {args.rounds}: {growth:+.1%}")
    for outcome in failures:
        print(f"FAIL {outcome}")
    return 0 if not failures and five == 0 and healthz == 200 and good == 200 and growth < 0.10 else 1


def run_fuzz(args, work: Path) -> int:
    """Hypothesis over the decode functions in this process, then mutated uploads against a live server."""
    import traceback

    import httpx
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from benchmarks import fuzzing

    fuzzing.seeds()
    import faulthandler

    faulthandler.enable()  # a crash in a native decoder prints where it happened
    crash_dir = Path(args.crash_dir)
    crash_dir.mkdir(parents=True, exist_ok=True)
    print(f"inputs under test are written to {crash_dir} (kept if a native decoder crashes this process)")
    media_s = args.seconds * args.media_share
    examples: Counter = Counter()
    findings: dict[tuple, str] = {}
    slowest = [0.0, ""]
    deadline = time.monotonic() + media_s

    @settings(
        max_examples=50,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def media_batch(data):
        target = data.draw(st.sampled_from(["clip", "clip sweep", "image+audio", "image", "audio"]))
        families = {
            "image+audio": [fuzzing.IMAGES, fuzzing.SOUNDS],
            "image": [fuzzing.IMAGES],
            "audio": [fuzzing.SOUNDS],
        }.get(target, [fuzzing.CLIPS])
        if data.draw(st.integers(0, 4)) == 0:  # any seed in any field: polyglots and the wrong kind of file
            families = [None] * len(families)
        inputs = [data.draw(fuzzing.mutated(family)) for family in families]
        for k, blob in enumerate(inputs):  # on disk first: a native crash (SIGSEGV) leaves its input behind
            (crash_dir / f"current-{k}.bin").write_bytes(blob)
        (crash_dir / "current-target.txt").write_text(target)
        started = time.perf_counter()
        try:
            if target.startswith("clip"):
                fuzzing.check_video(inputs[0], 0.5 if target == "clip sweep" else None)
            elif target == "image+audio":
                fuzzing.check_image_audio(*inputs)
            elif target == "image":
                fuzzing.check_image(inputs[0])
            else:
                fuzzing.check_audio(inputs[0])
        except Exception as exc:  # anything but a MediaError (or a wrong shape) is a finding
            findings.setdefault((target, type(exc).__name__, str(exc)[:120]), traceback.format_exc()[-1500:])
        took = time.perf_counter() - started
        examples[target] += 1
        if took > slowest[0]:
            slowest[:] = [took, target]

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns loudly about every corrupt TIFF/EXIF tag
        while time.monotonic() < deadline:
            media_batch()
    print(
        f"decode fuzz: {sum(examples.values())} examples in {media_s:.0f} s ({dict(examples)}); slowest "
        f"{slowest[0]:.2f} s ({slowest[1]}); findings: {len(findings)}"
    )
    for key, trace in findings.items():
        print(f"FINDING {key}\n{trace}")

    model, source = resolve_model(args.model, work)
    statuses: Counter = Counter()
    transport: Counter = Counter()
    api_deadline = time.monotonic() + args.seconds - media_s
    with live_server(
        model, work / "server.log", {**limit_env(SMALL_LIMITS), "FNAC_DECODE_TIMEOUT_S": "10"}
    ) as server:
        client = httpx.Client(timeout=30)

        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(st.data())
        def api_batch(data):
            if data.draw(st.booleans()):
                parts = [("video", "fuzz.mp4", data.draw(fuzzing.mutated(fuzzing.CLIPS)), "video/mp4")]
            else:
                parts = [
                    ("image", "fuzz.png", data.draw(fuzzing.mutated(fuzzing.IMAGES)), "image/png"),
                    ("audio", "fuzz.wav", data.draw(fuzzing.mutated(fuzzing.SOUNDS)), "audio/wav"),
                ]
            params = data.draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "t": st.sampled_from(["0", "0.5", "2", "-1", "nan", "inf", "1e308"]),
                        "stride": st.sampled_from(["0.5", "1", "1e-9", "0"]),
                        "format": st.sampled_from(["json", "png", "mp4", "gif"]),
                        "start": st.sampled_from(["0", "1", "-1", "nan"]),
                        "end": st.sampled_from(["0.5", "2", "1e308"]),
                        "heatmap_png": st.sampled_from(["true", "false", "maybe"]),
                    },
                )
            )
            body, content_type = malformed.multipart(parts)
            try:
                response = client.post(
                    f"{server.base}/localize",
                    content=body,
                    params=params,
                    headers={"Content-Type": content_type},
                )
                statuses[response.status_code] += 1
            except httpx.TransportError as exc:
                transport[type(exc).__name__] += 1

        while time.monotonic() < api_deadline and server.alive():
            api_batch()
        alive = server.alive()
        healthz = httpx.get(f"{server.base}/healthz", timeout=10).status_code if alive else None
        kind, files = good_requests()[0]
        good = httpx.post(f"{server.base}/localize", files=files, timeout=60).status_code if alive else None
        restarts = metric_value(server.base, "fnac_decode_worker_restarts_total") if alive else float("nan")
        client.close()
    five = sum(n for status, n in statuses.items() if status >= 500)
    print(
        f"API fuzz ({source}): {sum(statuses.values())} uploads in {args.seconds - media_s:.0f} s; statuses "
        f"{dict(sorted(statuses.items()))}; 5xx {five}; transport errors {dict(transport) or 0}; decode worker "
        f"restarts {restarts:g}; server alive {alive}, healthz {healthz}, good {kind} request {good}"
    )
    return 0 if not findings and not five and not transport and alive and good == 200 else 1


def run_schemathesis(args, work: Path) -> int:
    """Schemathesis (its CLI) against the live server's OpenAPI schema."""
    model, source = resolve_model(args.model, work)
    checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
    with live_server(
        model, work / "server.log", {**limit_env(SMALL_LIMITS), "FNAC_DECODE_TIMEOUT_S": "10"}
    ) as server:
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{server.base}/openapi.json",
            "--checks",
            checks,
            "--max-time",
            str(int(args.seconds)),
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "--continue-on-failure",
            "--report",
            "junit",
            "--report-dir",
            str(work / "report"),
        ]
        print(f"model: {source}\n$ {' '.join(command[1:])}", flush=True)
        result = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 300)
        alive = server.alive()
        statuses = status_counts(server.base) if alive else {}
    print(result.stdout[-6000:], result.stderr[-2000:])
    five = sum(n for status, n in statuses.items() if status.startswith("5"))
    print(
        f"server statuses (from /metrics): {dict(sorted(statuses.items()))}; 5xx {five:g}; alive {alive}; "
        f"schemathesis exit {result.returncode}"
    )
    return 0 if result.returncode == 0 and five == 0 and alive else 1
