"""The HTTP API: predictions, health, readiness, model card, metrics, problem docs.

Request flow: checks here (field, size, type) -> imaging (bytes -> array) ->
classifier (ONNX Runtime) -> JSON. Errors are raised as ApiError and answered by
penguin_api.errors as problem+json.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
from flask import Blueprint, Request, Response, abort, current_app, g, jsonify, request
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge

from penguin_api import errors, imaging, metrics
from penguin_api.classifier import Classifier, Prediction
from penguin_api.config import Settings
from penguin_api.loader import ModelSlot

bp = Blueprint("api", __name__)


class UploadRequest(Request):
    """Keeps uploaded files in memory instead of spilling those over 500 kB to disk.

    MAX_CONTENT_LENGTH bounds the size, and every upload is read whole right away, so a
    temporary file would only add disk writes to each phone photo. For the same reason
    text fields have no limit of their own (MAX_FORM_MEMORY_SIZE is off): the body limit
    bounds them too, and so the only 413 a form within that limit can get is its parts.
    """

    def _load_form_data(self) -> None:
        try:
            super()._load_form_data()
        except RequestEntityTooLarge:
            if self._within_size_limit():
                raise errors.TooManyFormParts(self.max_form_parts or 0) from None
            raise

    def _within_size_limit(self) -> bool:
        """The body is no larger than MAX_CONTENT_LENGTH (known up front, or read so far)."""
        limit = self.max_content_length
        if limit is None:
            return True
        if self.content_length is not None:
            return self.content_length <= limit
        # A chunked body: Werkzeug's limited stream is exhausted when it hit the limit.
        return not getattr(self.stream, "is_exhausted", True)

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return io.BytesIO()


@dataclass(frozen=True)
class Service:
    """What the endpoints need: the settings, this worker's model slot, its inference lock.

    A worker answers predictions one at a time, whichever of its threads runs them:
    parsing the upload, decoding and inference hold `inference`. So a worker keeps to its
    one core (ORT_INTRA_OP_THREADS), and to one decode's memory (DECODE_MEMORY_MB).
    """

    settings: Settings
    slot: ModelSlot
    inference: threading.Lock = field(default_factory=threading.Lock)


def _service() -> Service:
    return current_app.extensions["penguin"]


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time one stage of the request for Server-Timing and the stage histogram."""
    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - started
        g.timings[name] = g.timings.get(name, 0.0) + elapsed
        metrics.child(metrics.STAGE_SECONDS, name).observe(elapsed)


def _classifier() -> Classifier:
    classifier = _service().slot.classifier
    if classifier is None:
        raise errors.NotReady(
            "The model is still loading; try again in a moment.", headers={"Retry-After": "1"}
        )
    return classifier


def _uploads() -> list[FileStorage]:
    """The request's `file` parts, after the framing, content-type and presence checks."""
    if request.content_length is None and "Transfer-Encoding" not in request.headers:
        # Neither: the request has no body (RFC 9112 6.3), whatever the client sends after.
        raise errors.LengthRequired(
            f"{request.method} {request.path} needs the photo as its body, sent with "
            "Content-Length or 'Transfer-Encoding: chunked'; this request has neither."
        )
    if request.mimetype != "multipart/form-data":
        raise errors.UnsupportedContentType(
            f"Send the image as multipart/form-data in a field named 'file' "
            f"(got {request.mimetype or 'no content type'})."
        )
    files = request.files.getlist("file")
    if not files:
        if "file" in request.form:
            raise errors.MissingFile("The field 'file' holds text; send the photo as a file part.")
        others = ", ".join(sorted(request.files)) or "none"
        raise errors.MissingFile(f"No multipart field named 'file' (file fields sent: {others}).")
    return files


def _decode(upload: FileStorage, size: int) -> np.ndarray:
    """One upload's bytes to a model input array, or the ApiError that refuses it."""
    data = upload.read()
    if not data:
        raise errors.EmptyFile(f"The file {upload.filename or '(unnamed)'!r} is empty.")
    settings = _service().settings
    try:
        return imaging.prepare(
            data,
            max_pixels=settings.max_image_pixels,
            size=size,
            max_decode_bytes=settings.decode_memory_bytes,
        )
    except imaging.ImageError as exc:
        raise errors.from_image_error(exc) from None


def _count(prediction: Prediction) -> None:
    if prediction.is_penguin:
        metrics.child(metrics.PREDICTIONS, prediction.species).inc()
    else:
        metrics.NON_PENGUIN.inc()


def _count_refusal(exc: errors.ApiError) -> None:
    metrics.child(metrics.IMAGE_ERRORS, exc.problem.slug).inc()


@bp.post("/predict")
def predict() -> Response:
    """Classify one uploaded photo."""
    classifier = _classifier()
    with _service().inference:
        return _predict_one(classifier)


def _predict_one(classifier: Classifier) -> Response:
    files = _uploads()
    if len(files) > 1:
        raise errors.TooManyFiles(
            f"POST /predict takes one file, got {len(files)}; use POST /predict/batch."
        )
    try:
        with stage("decode"):
            array = _decode(files[0], classifier.input_size)
    except errors.ApiError as exc:
        _count_refusal(exc)
        raise
    with stage("infer"):
        prediction = classifier.predict(array[np.newaxis])[0]
    _count(prediction)
    return jsonify(prediction.as_dict())


@bp.post("/predict/batch")
def predict_batch() -> Response:
    """Classify several photos in one request; a bad file gets its own error entry."""
    classifier = _classifier()
    with _service().inference:
        return _predict_many(classifier)


def _predict_many(classifier: Classifier) -> Response:
    files = _uploads()
    limit = _service().settings.max_batch_files
    if len(files) > limit:
        raise errors.TooManyFiles(f"A batch takes at most {limit} files, got {len(files)}.")
    results: list[dict[str, Any]] = []
    arrays: list[np.ndarray] = []
    with stage("decode"):
        for upload in files:
            entry: dict[str, Any] = {"filename": upload.filename or None}
            try:
                arrays.append(_decode(upload, classifier.input_size))
            except errors.ApiError as exc:
                _count_refusal(exc)
                entry["error"] = exc.to_problem()
            results.append(entry)
    if arrays:
        with stage("infer"):
            predictions = iter(classifier.predict(np.stack(arrays)))
        for entry in results:
            if "error" not in entry:
                prediction = next(predictions)
                _count(prediction)
                entry.update(prediction.as_dict())
    failed = sum("error" in entry for entry in results)
    return jsonify(
        {
            "results": results,
            "succeeded": len(results) - failed,
            "failed": failed,
            "model": {"name": classifier.card.name, "version": classifier.card.version},
        }
    )


@bp.get("/health")
def health() -> Response:
    """Liveness: the process answers (the model may still be loading)."""
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready() -> Response:
    """Readiness: this worker's model is loaded, verified and warmed up."""
    classifier = _classifier()
    return jsonify(
        {
            "status": "ready",
            "model": {"name": classifier.card.name, "version": classifier.card.version},
        }
    )


@bp.get("/model")
def model_card() -> Response:
    """The model card of the model this worker serves."""
    return jsonify(_classifier().card.raw)


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus text exposition, summed over all workers."""
    body, content_type = metrics.exposition(_service().settings.prometheus_multiproc_dir)
    return Response(body, content_type=content_type)


@bp.get("/problems/<slug>")
def problem_doc(slug: str) -> Response:
    """What a problem `type` URI means (every error's `type` points here)."""
    problem = errors.PROBLEMS.get(slug)
    if problem is None:
        abort(404)
    return jsonify(
        {
            "type": problem.uri,
            "title": problem.title,
            "status": problem.status,
            "description": problem.description,
        }
    )
