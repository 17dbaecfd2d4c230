"""Reliability, security and performance evidence: `python -m benchmarks.reliability <part>`.

Every part runs against real processes on this machine (loopback only), is bounded in time, prints its
figures and exits non-zero when its claim does not hold:

- `malformed`    the malformed-upload corpus (benchmarks/malformed.py), several rounds: every answer a 4xx
                 JSON error in time, no 5xx, the server alive, its RSS (decode workers included) flat
- `fuzz`         hypothesis over the decode + preprocessing functions (only MediaError), then mutated uploads
                 against a live server (no 5xx, the process never dies)
- `schemathesis` the OpenAPI schema against the live server: no 5xx, responses match the schema
- `load`         32 concurrent clients for 60 s: no errors but deliberate 429/503, p50/p99
- `soak`         steady load with RSS sampled: growth after warm-up < 1 % per hour
- `kill-train`   `fnac train` SIGKILLed at random points (one process and under torchrun), resumed each time
- `decode-speed` frame + 3 s audio window from a 10 s 720p H.264/AAC clip: fnac.media vs the ffmpeg CLI

The served model is --model, else FNAC_MODEL / the bundled one, else a randomly initialised network of the
bundled model's shape (timings depend on the model; correctness claims do not).

The parts live in `uploads` (malformed, fuzz, schemathesis), `load` (load, soak), `kill_train` and
`decode_speed`; `common` holds what they share (the server's limits and model, good requests, /metrics) and
`__main__` the command line.
"""
