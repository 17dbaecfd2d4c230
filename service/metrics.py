"""Prometheus metrics (process-wide, on prometheus_client's default registry)."""

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter("fnac_requests_total", "HTTP requests by route and status", ["route", "method", "status"])
REQUEST_SECONDS = Histogram(
    "fnac_request_duration_seconds", "HTTP request latency by route", ["route"], buckets=_LATENCY_BUCKETS
)
DECODE_SECONDS = Histogram(
    "fnac_decode_seconds", "Decoding time of one upload (worker pool)", buckets=_LATENCY_BUCKETS
)
INFERENCE_SECONDS = Histogram("fnac_inference_seconds", "Model call time per batch", buckets=_LATENCY_BUCKETS)
BATCH_SIZE = Histogram("fnac_batch_size", "Inputs per model call", buckets=(1, 2, 4, 8, 16, 32, 64, 128))
QUEUE_DEPTH = Gauge("fnac_queue_depth", "Inputs waiting for inference")
DECODE_WORKER_RESTARTS = Counter(
    "fnac_decode_worker_restarts_total", "Decode workers killed and replaced", ["reason"]
)
