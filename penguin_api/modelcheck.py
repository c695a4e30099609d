"""Verify the model in a forked child process: the Gunicorn master's start-up check.

The master must never import onnxruntime (its threads do not survive the fork to the
workers: a worker forked after the import aborts at exit), so this module imports
nothing heavy; the child does the loading.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class ModelCheck:
    """Verifies the model in a forked child process, so the caller never loads ONNX Runtime.

    The Gunicorn master uses it: importing onnxruntime starts threads, and a process
    forked after that aborts at exit. The check runs while the caller does other start-up
    work; `result()` waits for it. A model that crashes ONNX Runtime crashes only the child.
    """

    def __init__(self, model_dir: Path, *, threads: int = 1) -> None:
        read_end, write_end = os.pipe()
        self._pid = os.fork()
        if self._pid == 0:  # the child: check, report, leave without running any cleanup
            os.close(read_end)
            with os.fdopen(write_end, "wb") as out:
                out.write(json.dumps(_check(model_dir, threads)).encode())
            os._exit(0)
        os.close(write_end)
        self._read_end = read_end

    def result(self) -> dict:
        """{"ok": True, name, version, sha256, labels, seconds} or {"ok": False, "error"}."""
        with os.fdopen(self._read_end, "rb") as pipe:
            report = pipe.read()
        _, status = os.waitpid(self._pid, 0)
        if report:
            return json.loads(report)
        if os.WIFSIGNALED(status):
            return {"ok": False, "error": f"loading the model killed the process with "
                    f"signal {os.WTERMSIG(status)}"}  # fmt: skip
        return {"ok": False, "error": "the model check ended without a report"}


def _check(model_dir: Path, threads: int) -> dict:
    from penguin_api.classifier import Classifier, ModelError

    try:
        # Unoptimised: this session only proves the model loads and fits its card.
        classifier = Classifier.load(model_dir, threads=threads, warmup_runs=1, optimize=False)
    except ModelError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # reported to the parent, which refuses to start
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    card = classifier.card
    return {
        "ok": True,
        "name": card.name,
        "version": card.version,
        "sha256": card.sha256,
        "labels": len(card.labels),
        "seconds": round(classifier.load_seconds, 3),
    }
