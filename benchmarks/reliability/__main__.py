"""`python -m benchmarks.reliability <part>`: the command line of the reliability parts."""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import benchmarks.reliability as package
from benchmarks.reliability.decode_speed import run_decode_speed
from benchmarks.reliability.kill_train import run_kill_train
from benchmarks.reliability.load import run_load, run_soak
from benchmarks.reliability.uploads import run_fuzz, run_malformed, run_schemathesis


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reliability", description=package.__doc__.split("\n")[0]
    )
    parts = parser.add_subparsers(dest="part", required=True)

    def part(name: str, help: str) -> argparse.ArgumentParser:
        p = parts.add_parser(name, help=help)
        p.add_argument(
            "--model", help="ONNX model to serve (default: FNAC_MODEL, the bundled model, or random)"
        )
        return p

    p = part("malformed", "post the malformed-upload corpus to a live server")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per answer")
    p = part("load", "concurrent closed-loop load")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument(
        "--env", action="append", default=[], help="FNAC_SETTING=value for the server (repeatable)"
    )
    p = part("soak", "long steady load with RSS sampling")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--warmup-s", type=float, default=60.0)
    p.add_argument("--max-growth-per-hour", type=float, default=0.01, help="RSS growth allowed after warm-up")
    p.add_argument("--log-every", type=int, default=0, help="print every Nth RSS sample as it comes (0: off)")
    p.add_argument(
        "--env", action="append", default=[], help="FNAC_SETTING=value for the server (repeatable)"
    )
    p.add_argument("--json", help="write the samples here")
    p = part("kill-train", "SIGKILL fnac train at random points, resume, compare")
    p.add_argument("--kills", type=int, default=12, help="single-process kills")
    p.add_argument("--torchrun-kills", type=int, default=4, help="kills under torchrun --nproc_per_node 2")
    p.add_argument("--kills-per-run", type=int, default=3, help="kills before a run is resumed to its end")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--tolerance", type=float, default=0.0, help="allowed per-epoch metric difference")
    p.add_argument("--seed", type=int, default=random.randrange(2**32))
    p = part("fuzz", "hypothesis over the decoders, then mutated uploads to a live server")
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--media-share", type=float, default=0.5, help="share of the time for the in-process part")
    p.add_argument("--crash-dir", default=os.path.join(tempfile.gettempdir(), "fnac-fuzz"))
    p = part("schemathesis", "schemathesis against the live OpenAPI schema")
    p.add_argument("--seconds", type=float, default=180.0)
    p = part("decode-speed", "fnac.media.decode_clip vs the ffmpeg CLI")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--gop", type=float, nargs="+", default=[2.0, 10.0], help="keyframe interval(s), seconds")
    args = parser.parse_args(argv)

    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    runners = {
        "malformed": run_malformed,
        "load": run_load,
        "soak": run_soak,
        "kill-train": run_kill_train,
        "fuzz": run_fuzz,
        "schemathesis": run_schemathesis,
        "decode-speed": run_decode_speed,
    }
    with tempfile.TemporaryDirectory(prefix=f"fnac-reliability-{args.part}-") as tmp:
        started = time.perf_counter()
        code = runners[args.part](args, Path(tmp))
        print(f"{args.part}: {'PASS' if code == 0 else 'FAIL'} in {time.perf_counter() - started:.0f} s")
        return code


if __name__ == "__main__":
    sys.exit(main())
