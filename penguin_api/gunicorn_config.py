"""Gunicorn settings for the Penguin Classification API.

Used by `penguin-api serve` (`-c python:penguin_api.gunicorn_config`), and through the
thin gunicorn.conf.py at the repository root by `make run` and the container's CMD, so
an installed wheel runs with the same settings as a checkout. Every value comes from
penguin_api.config.Settings (the environment, read once); this module explains why each
has the value it has, and holds the server hooks.
"""

import contextlib
import fcntl
import gc
import importlib
import json
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from penguin_api import telemetry
from penguin_api.config import Settings, SettingsError, memory_limit_mb

try:
    _settings = Settings.from_env()
except SettingsError as exc:
    print(json.dumps({"severity": "CRITICAL", "message": f"invalid setting: {exc}"}), flush=True)
    sys.exit(1)

# --- metrics across workers ---------------------------------------------------------------
# prometheus-client decides between in-process and multiprocess mode when it is first
# imported, from PROMETHEUS_MULTIPROC_DIR; set it here, before anything imports it.
_METRICS_PREFIX = "penguin-metrics-"
if _settings.prometheus_multiproc_dir is None:
    _shm = Path("/dev/shm")
    _metrics_dir = tempfile.mkdtemp(
        prefix=_METRICS_PREFIX,
        dir=str(_shm) if _shm.is_dir() and os.access(_shm, os.W_OK) else None,
    )
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
    _settings = Settings.from_env()

# One lock file per server, so its workers load their models one at a time (post_fork).
_LOAD_LOCK = str(_settings.prometheus_multiproc_dir / "model-load.lock")

# --- logging ------------------------------------------------------------------------------
# One JSON object per line on stdout (Cloud Logging's format), for our logs and Gunicorn's.
telemetry.configure_logging(_settings.log_level, _settings.google_cloud_project)
logger_class = telemetry.gunicorn_logger_class(_settings.google_cloud_project)
loglevel = _settings.log_level.lower()
errorlog = "-"
accesslog = "-"

# --- server socket ------------------------------------------------------------------------
# Cloud Run sends traffic to $PORT on all interfaces.
bind = f"{_settings.host}:{_settings.port}"
# Hold connections that arrive while every worker is busy instead of refusing them.
backlog = 256

# --- workers ------------------------------------------------------------------------------
# Inference is CPU-bound: one worker per CPU the cgroup quota allows (not the host's core
# count), each with one ONNX Runtime thread and one inference at a time, so workers never
# fight over cores. The worker receives each request whole in its event loop before it
# answers it (penguin_api/worker.py): a slow client holds a connection, not a worker.
worker_class = "penguin_api.worker.BufferingWorker"
workers = _settings.web_concurrency
# A whole request is answered in the event loop itself; threads take only requests whose
# framing the loop left to Gunicorn, which may still read from the client.
threads = 2
# Connections one worker holds (idle, arriving or answered), each for at most READ_TIMEOUT;
# past this the worker takes no more and new ones wait in the backlog.
worker_connections = 1000
# Heartbeat files in memory: a slow or full disk must not make Gunicorn kill healthy workers.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Not preloaded: each worker imports the app after the fork and builds its own session
# (ONNX Runtime's thread pools do not survive fork).
preload_app = False

# --- timeouts -----------------------------------------------------------------------------
# A request that runs this long in a worker (a stuck decode) gets the worker killed and
# replaced; receiving a request does not count, it has READ_TIMEOUT (penguin_api.worker).
timeout = _settings.timeout
# Cloud Run sends SIGTERM and kills 10 s later; in-flight requests get this long to finish,
# leaving the master time to exit cleanly within the window.
graceful_timeout = _settings.graceful_timeout
# Each connection is closed after its response, as sync workers did: the front end opens
# one per request, and the worker never holds an idle kept-alive connection.
keepalive = 0

# --- misc ---------------------------------------------------------------------------------
proc_name = "penguin-api"
# Gunicorn's runtime control socket lives at one fixed path per user; two servers (tests,
# several local instances) would fight over it, and nothing here uses it.
control_socket_disable = True


# --- server hooks -------------------------------------------------------------------------
def on_starting(server):
    """Check the model files cheaply before any worker exists, and preload the app's modules.

    A missing card or model file, or one that fails its SHA-256 checksum, stops the server
    here with one log line and exit status 1. Loading the session (and so checking the
    graph against the card) is left to the workers, which refuse the same way (wsgi):
    the master must never import onnxruntime, whose threads do not survive the fork.
    """
    from penguin_api.loader import REFUSAL_MARK

    metrics_dir = _settings.prometheus_multiproc_dir
    if metrics_dir is not None:
        # Samples, or a refusal, left by an earlier run would be taken for ours.
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*metrics_dir.glob("*.db"), metrics_dir / REFUSAL_MARK]:
            stale.unlink(missing_ok=True)
    log = server.log
    log.info("metrics directory: %s", metrics_dir)
    classifier = importlib.import_module("penguin_api.classifier")  # numpy, shared by forks
    check: dict = {}

    def verify() -> None:  # hashing releases the GIL: it overlaps the imports below
        try:
            check["card"], _ = classifier.read_verified_model(_settings.model_dir)
        except classifier.ModelError as exc:
            check["error"] = str(exc)

    verifier = threading.Thread(target=verify, name="model-checksum")
    verifier.start()
    # Import the app's modules once here, so forked workers start with them.
    for module in ("penguin_api.api", "penguin_api.openapi", "penguin_api.web", "flask"):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    verifier.join()
    if "error" in check:
        log.critical("refusing to start: %s", check["error"])
        _remove_metrics_dir()
        sys.exit(1)
    card = check["card"]
    log.info(
        "model files verified: %s %s sha256 %s (%d labels)",
        card.name, card.version, card.sha256, len(card.labels),
    )  # fmt: skip
    _log_memory_plan(log)
    # What the master imported stays shared with the workers: keep the collector from
    # touching (and so copying) those pages in every worker.
    gc.freeze()


def post_fork(server, worker):
    """Workers load their models one at a time: take the load lock before the app loads.

    Loading is CPU-bound; two workers loading side by side on a small instance both
    become ready late, while one after the other the first is ready (and answers the
    first request) in the time a single load takes: measured, the first prediction after
    launch comes about 0.2 s sooner on two shared cores. The lock is released in
    post_worker_init, or by the kernel if the worker dies (so a worker that refuses a
    bad model lets the next one find the same fault, and exit quietly).
    """
    lock = os.open(_LOAD_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    worker.model_load_lock = lock


def post_worker_init(worker):
    """Start accepting requests only once this worker's own model is loaded and warm.

    A worker that accepted while still loading would answer 503 to requests that the
    other, ready workers could serve, after every worker replacement and on every cold
    start. Waiting here leaves them queued in the listen backlog for the second or two
    the load takes. The wait stays inside Gunicorn's timeout, which would otherwise kill
    the silent worker; a failed load exits the worker (penguin_api.wsgi).
    """
    service = worker.wsgi.extensions.get("penguin")
    if service is not None:
        service.slot.wait(max(1, _settings.timeout - 5))
    lock = getattr(worker, "model_load_lock", None)
    if lock is not None:
        os.close(lock)  # the next worker may load now
        worker.model_load_lock = None
    # The app and model are loaded for good: later collections need not scan them.
    gc.freeze()


def child_exit(server, worker):
    """A worker is gone: drop its live gauges from the summed metrics."""
    from penguin_api import metrics

    metrics.mark_process_dead(worker.pid, _settings.prometheus_multiproc_dir)


def on_exit(server):
    """Remove the metrics directory this module created."""
    _remove_metrics_dir()


def _log_memory_plan(log) -> None:
    """Say how large an image each decode may be here, and why (the instance's memory)."""
    budget = _settings.decode_memory_bytes
    if budget is None:
        log.info("decode memory: no limit but MAX_IMAGE_PIXELS (%d)", _settings.max_image_pixels)
        return
    from penguin_api import imaging  # imported by on_starting's preload anyway

    limit = memory_limit_mb()
    log.info(
        "decode memory: %.0f MiB per decode, one decode per worker (%d workers, memory %s); "
        "largest images: WebP %.1f MP, PNG %.1f MP, JPEG %.1f MP",
        budget / 2**20, _settings.web_concurrency,
        f"{limit:.0f} MiB" if limit is not None else "unknown",
        *(min(_settings.max_image_pixels, imaging.max_pixels_within(budget, fmt)) / 1e6
          for fmt in ("WEBP", "PNG", "JPEG")),
    )  # fmt: skip


def _remove_metrics_dir():
    path = _settings.prometheus_multiproc_dir
    if path is not None and path.name.startswith(_METRICS_PREFIX):
        shutil.rmtree(path, ignore_errors=True)
