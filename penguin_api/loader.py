"""The worker's model slot: loads the classifier in the background, says when it is ready.

A worker answers /health at once and /ready (and predictions) only once its own
session is verified, loaded and warmed up. Loading off the request thread keeps the
worker responsive meanwhile, so an orchestrator can tell "alive" from "ready".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from penguin_api import imaging
from penguin_api.classifier import Classifier, ModelError

_log = logging.getLogger("penguin_api.loader")

#: A file in the server's own directory (PROMETHEUS_MULTIPROC_DIR), created by the first
#: worker that refuses the model; the others, failing alike, then exit without a word.
REFUSAL_MARK = "model-refused"


class ModelSlot:
    """Holds this process's Classifier once it is loaded; never a half-loaded one."""

    def __init__(
        self,
        model_dir: Path,
        *,
        threads: int = 1,
        top_k: int = 3,
        warmup_runs: int = 2,
        on_loaded: Callable[[Classifier], None] | None = None,
        on_failed: Callable[[ModelError], None] | None = None,
    ) -> None:
        self.model_dir = model_dir
        self._options = {"threads": threads, "top_k": top_k, "warmup_runs": warmup_runs}
        self._on_loaded = on_loaded
        self._on_failed = on_failed
        self._classifier: Classifier | None = None
        self.error: ModelError | None = None
        self._done = threading.Event()

    @property
    def classifier(self) -> Classifier | None:
        """The loaded classifier, or None while loading (or after a failure)."""
        return self._classifier

    @property
    def ready(self) -> bool:
        return self._classifier is not None

    def load(self) -> None:
        """Load in the calling thread; failures are kept in `error` and reported."""
        try:
            classifier = Classifier.load(self.model_dir, **self._options)
            imaging.warm_up()
        except ModelError as exc:
            self.error = exc
            if self._on_failed:  # it reports the failure its own way
                self._on_failed(exc)
            else:
                _log.critical("model refused: %s", exc, extra={"model_dir": str(self.model_dir)})
        else:
            self._classifier = classifier
            _log.info(
                "model ready: %s %s in %.3f s",
                classifier.card.name,
                classifier.card.version,
                classifier.load_seconds,
                extra={"sha256": classifier.card.sha256, "load_seconds": classifier.load_seconds},
            )
            if self._on_loaded:
                self._on_loaded(classifier)
        finally:
            self._done.set()

    def start(self) -> threading.Thread:
        """Load in a background daemon thread."""
        thread = threading.Thread(target=self.load, name="model-loader", daemon=True)
        thread.start()
        return thread

    def wait(self, timeout: float | None = None) -> bool:
        """Block until loading finished (either way); True if it did within `timeout`."""
        return self._done.wait(timeout)
