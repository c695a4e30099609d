"""Prometheus metrics, correct across Gunicorn workers (prometheus-client multiprocess mode).

Under Gunicorn, penguin_api.gunicorn_config points PROMETHEUS_MULTIPROC_DIR at a fresh directory
before anything imports prometheus_client, so each worker writes its samples to files
that /metrics sums. Without it (tests in one process, the CLI) the default registry is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "penguin_http_requests",
    "HTTP requests answered, by endpoint (route), method and status.",
    ["endpoint", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "penguin_http_request_duration_seconds",
    "Time from request start to response, by endpoint.",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "penguin_stage_duration_seconds",
    "Time spent per stage of a prediction: decode (bytes to model input) and infer (ONNX run).",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
PREDICTIONS = Counter(
    "penguin_predictions",
    "Images classified as a penguin, by predicted species.",
    ["species"],
)
NON_PENGUIN = Counter(
    "penguin_non_penguin_predictions",
    "Images classified as showing no penguin.",
)
IMAGE_ERRORS = Counter(
    "penguin_image_errors",
    "Uploads refused before inference, by problem type.",
    ["problem"],
)
ANSWERED_BEFORE_APP = Counter(
    "penguin_answered_before_app",
    "Requests the worker answered itself, before the application saw them (a client too "
    "slow to send its request, framing or a head that cannot be read), by status and "
    "problem type.",
    ["status", "problem"],
)
MODEL_LOAD_SECONDS = Histogram(
    "penguin_model_load_duration_seconds",
    "Time a worker took to verify, load and warm up its model session.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)
MODEL_INFO = Gauge(
    "penguin_model_info",
    "The model the workers serve (value 1), by name, version and SHA-256.",
    ["name", "version", "sha256"],
    multiprocess_mode="max",
)
COLD_STARTS = Counter(
    "penguin_worker_cold_starts",
    "Workers that served their first request.",
)
LIVE_WORKERS = Gauge(
    "penguin_workers",
    "Workers serving with their model loaded (each live worker adds 1).",
    multiprocess_mode="livesum",
)


_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, looked up once per label set and then reused.

    `labels()` validates, stringifies and takes a lock on every call; the request path
    asks for the same few label sets thousands of times. The child's value checks the
    pid on every write, so a cached child stays correct in forked workers.
    """
    key = (id(metric), values)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*values)
    return found


def exposition(multiproc_dir: Path | None) -> tuple[bytes, str]:
    """The metrics page (body, content type), summed over all workers when multiprocess."""
    if multiproc_dir is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry, path=str(multiproc_dir))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int, multiproc_dir: Path | None) -> None:
    """Drop a dead worker's live gauges (its counters and histograms stay summed)."""
    if multiproc_dir is not None:
        _multiprocess.mark_process_dead(pid, path=str(multiproc_dir))
