"""Penguin Classification API: tells which penguin species is in a photo."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from penguin_api.config import Settings

if TYPE_CHECKING:  # Flask is imported by create_app; `import penguin_api` stays light
    from flask import Flask

_log = logging.getLogger("penguin_api")

#: Most multipart parts a request may have (Werkzeug's default): a batch of photos plus
#: a few text fields needs far fewer; past it the answer is 413 too-many-parts.
MAX_FORM_PARTS = 1000


def create_app(
    settings: Settings | None = None,
    *,
    load_model: bool = True,
    on_model_error: Callable[[Exception], None] | None = None,
) -> Flask:
    """Build the Flask app; the model loads in the background unless `load_model` is False.

    `on_model_error` runs if loading fails (the Gunicorn entry point exits the worker
    so that the server refuses to run with a bad model).
    """
    from flask import Flask

    from penguin_api import api, errors, metrics, openapi, telemetry
    from penguin_api.loader import ModelSlot

    settings = settings or Settings.from_env()
    telemetry.configure_logging(settings.log_level, settings.google_cloud_project)

    app = Flask(__name__)
    app.request_class = api.UploadRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = None  # see api.UploadRequest
    app.config["MAX_FORM_PARTS"] = MAX_FORM_PARTS
    app.json.sort_keys = False  # keep answers in the documented field order

    slot = ModelSlot(
        settings.model_dir,
        threads=settings.ort_intra_op_threads,
        top_k=settings.top_k,
        warmup_runs=settings.warmup_runs,
        on_loaded=lambda c: _record_load(metrics, c),
        on_failed=on_model_error,
    )
    app.extensions["penguin"] = api.Service(settings=settings, slot=slot)

    telemetry.init_app(app)
    errors.init_app(app, settings.max_upload_bytes)
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)
    try:
        from penguin_api.web import bp as web_bp
    except ImportError:
        _log.warning("upload page not available: penguin_api.web is missing")
    else:
        app.register_blueprint(web_bp)

    if load_model:
        slot.start()
    return app


def _record_load(metrics, classifier) -> None:
    metrics.MODEL_LOAD_SECONDS.observe(classifier.load_seconds)
    card = classifier.card
    metrics.MODEL_INFO.labels(card.name, card.version, card.sha256).set(1)
    # The denominator of the workers' busy share (monitoring/: saturation).
    metrics.LIVE_WORKERS.set(1)
