"""Gunicorn's entry point: `gunicorn -c gunicorn.conf.py penguin_api.wsgi:app`.

Imported in each worker after the fork, so every worker builds its own ONNX Runtime
session. If that load fails (a model ONNX Runtime cannot load, or one whose graph does
not fit its card) the worker refuses with one log line and exits with Gunicorn's
boot-error code, which makes the master stop as well: no worker ever serves a bad model.
"""

from __future__ import annotations

import logging
import os

from penguin_api import create_app
from penguin_api.config import Settings
from penguin_api.loader import REFUSAL_MARK

#: Gunicorn's Arbiter.WORKER_BOOT_ERROR: the master halts when a worker exits with it.
WORKER_BOOT_ERROR = 3

_log = logging.getLogger("penguin_api.wsgi")
_settings = Settings.from_env()


def _first_to_refuse() -> bool:
    """True in exactly one worker of this server: the one that reports the refusal.

    Every worker loads the same files, so all fail alike; one line says why.
    """
    if _settings.prometheus_multiproc_dir is None:
        return True
    try:
        os.close(os.open(_settings.prometheus_multiproc_dir / REFUSAL_MARK,
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # fmt: skip
    except FileExistsError:
        return False
    except OSError:
        return True
    return True


def _exit_worker(error: Exception) -> None:
    if _first_to_refuse():
        _log.critical("refusing to start: %s", error, extra={"model_dir": str(_settings.model_dir)})
    logging.shutdown()  # flush the line that says why
    os._exit(WORKER_BOOT_ERROR)


app = create_app(_settings, on_model_error=_exit_worker)
