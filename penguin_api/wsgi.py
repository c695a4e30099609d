"""Gunicorn's entry point: `gunicorn -c gunicorn.conf.py penguin_api.wsgi:app`.

Imported in each worker after the fork, so every worker builds its own ONNX Runtime
session. If that load fails the worker exits with Gunicorn's boot-error code, which
makes the master stop as well: no worker ever serves with a bad model.
"""

from __future__ import annotations

import logging
import os

from penguin_api import create_app

#: Gunicorn's Arbiter.WORKER_BOOT_ERROR: the master halts when a worker exits with it.
WORKER_BOOT_ERROR = 3


def _exit_worker(_error: Exception) -> None:
    logging.shutdown()  # flush the log line that says why
    os._exit(WORKER_BOOT_ERROR)


app = create_app(on_model_error=_exit_worker)
