"""Error types and their JSON: RFC 9457 `application/problem+json` with stable `type` URIs.

Every error the service answers, ours or Werkzeug's (404, 405, 413 ...), goes out in the
same shape; a 500 never carries a traceback (that goes to the log, with the request id).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, has_app_context, json, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from penguin_api import imaging

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "/problems/"
_log = logging.getLogger("penguin_api.errors")


@dataclass(frozen=True)
class ProblemType:
    """One kind of error: a stable slug (the `type` URI's last part), status and title."""

    slug: str
    status: int
    title: str
    description: str

    @property
    def uri(self) -> str:
        return PROBLEM_BASE + self.slug


#: Every problem type the API can answer with; /problems/<slug> describes each.
PROBLEMS: dict[str, ProblemType] = {
    p.slug: p
    for p in (
        ProblemType("missing-file", 400, "No file uploaded",
                    "The request has no multipart field named `file`."),
        ProblemType("empty-file", 400, "Empty file", "The uploaded file has no bytes."),
        ProblemType("too-many-files", 400, "Too many files",
                    "More files than the endpoint takes in one request."),
        ProblemType("bad-request", 400, "Bad request",
                    "The request could not be read (for example a malformed multipart body)."),
        ProblemType("bad-framing", 400, "Malformed request framing",
                    "The body's framing cannot be read: a malformed chunked body (chunk size, "
                    "extension, CRLF, trailer, or no last chunk), both Content-Length and "
                    "Transfer-Encoding, or a Transfer-Encoding that does not end in chunked."),
        ProblemType("not-found", 404, "Not found", "No such endpoint."),
        ProblemType("method-not-allowed", 405, "Method not allowed",
                    "The endpoint exists but not with this HTTP method; see the Allow header."),
        ProblemType("request-timeout", 408, "Request timeout",
                    "The request did not arrive in full within READ_TIMEOUT seconds of "
                    "connecting; the connection is closed. Send it again."),
        ProblemType("length-required", 411, "Length required",
                    "An upload needs a framed body: send it with Content-Length, or with "
                    "Transfer-Encoding: chunked over HTTP/1.1."),
        ProblemType("expectation-failed", 417, "Expectation failed",
                    "The request's Expect header asks for something other than "
                    "100-continue, the one expectation the server meets."),
        ProblemType("request-line-too-long", 414, "Request line too long",
                    "The request line (method, path and query) is over the server's limit "
                    "(4,094 bytes unless its operator changed it)."),
        ProblemType("headers-too-large", 431, "Request header fields too large",
                    "A header line is over the server's limit, or the request has too many "
                    "header fields (8,190 bytes and 100 fields unless its operator changed "
                    "them)."),
        ProblemType("upload-too-large", 413, "Upload too large",
                    "The request body is over the upload limit (MAX_UPLOAD_MB)."),
        ProblemType("too-many-parts", 413, "Too many form parts",
                    "The multipart form has more parts than the service reads (1,000); "
                    "a prediction needs one `file` part, a batch one per photo."),
        ProblemType("image-too-large", 413, "Image too large",
                    "The image has more pixels than the limit (MAX_IMAGE_PIXELS)."),
        ProblemType("unsupported-image", 415, "Unsupported image",
                    "The file is not a decodable image in an accepted format."),
        ProblemType("unsupported-content-type", 415, "Unsupported content type",
                    "Uploads must be sent as multipart/form-data."),
        ProblemType("unsupported-transfer-coding", 501, "Transfer coding not implemented",
                    "The body uses a transfer coding (gzip, deflate, ...) this server does not "
                    "decode; only chunked is implemented."),
        ProblemType("not-ready", 503, "Not ready",
                    "The model is still loading; retry after the Retry-After seconds."),
        ProblemType("internal-error", 500, "Internal server error",
                    "Something failed on our side; the request id finds it in the logs."),
    )
}  # fmt: skip


class ApiError(Exception):
    """An error with an HTTP status and problem type; `detail` is shown to the caller."""

    problem: ProblemType = PROBLEMS["internal-error"]

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}

    def to_problem(self) -> dict[str, Any]:
        """The problem object (also used for a bad file's entry in a batch answer)."""
        return problem_body(self.problem, self.detail)


def _error(slug: str) -> type[ApiError]:
    name = "".join(part.title() for part in slug.split("-"))
    return type(name, (ApiError,), {"problem": PROBLEMS[slug], "__doc__": PROBLEMS[slug].title})


MissingFile = _error("missing-file")
EmptyFile = _error("empty-file")
TooManyFiles = _error("too-many-files")
BadRequest = _error("bad-request")
LengthRequired = _error("length-required")
UploadTooLarge = _error("upload-too-large")
ImageTooLarge = _error("image-too-large")
UnsupportedImage = _error("unsupported-image")
UnsupportedContentType = _error("unsupported-content-type")
NotReady = _error("not-ready")


class TooManyFormParts(RequestEntityTooLarge):
    """Werkzeug stopped reading a form at its part limit, the body being within its size.

    Werkzeug raises a plain 413 for both; this tells the caller which limit it hit.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The form has more than {limit:,} parts. POST /predict takes one part named "
            "'file'; POST /predict/batch one 'file' part per photo."
        )


def from_image_error(exc: imaging.ImageError) -> ApiError:
    """The API error for an upload imaging refused (413 for size, 415 otherwise)."""
    if isinstance(exc, imaging.ImageTooLarge):
        return ImageTooLarge(str(exc))
    detail = str(exc)
    if imaging.ACCEPTED_FORMATS_TEXT not in detail:
        detail += f" Accepted formats: {imaging.ACCEPTED_FORMATS_TEXT}."
    return UnsupportedImage(detail)


#: Werkzeug's own errors, by status, as our problem types.
_HTTP_PROBLEMS = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    413: "upload-too-large",
    415: "unsupported-content-type",
    500: "internal-error",
    503: "not-ready",
}


def problem_body(problem: ProblemType, detail: str) -> dict[str, Any]:
    """{type, title, status, detail} plus the request id when answering a request."""
    body: dict[str, Any] = {
        "type": problem.uri,
        "title": problem.title,
        "status": problem.status,
        "detail": detail,
    }
    request_id = g.get("request_id") if has_app_context() else None
    if request_id:
        body["request_id"] = request_id
    return body


def problem_response(
    problem: ProblemType, detail: str, headers: dict[str, str] | None = None
) -> Response:
    """A complete problem+json response."""
    response = Response(
        json.dumps(problem_body(problem, detail)), status=problem.status, mimetype=PROBLEM_JSON
    )
    response.headers.update(headers or {})
    return response


def init_app(app: Flask, max_upload_bytes: int) -> None:
    """Answer every error in problem+json."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return problem_response(exc.problem, exc.detail, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {}
        if status == 413:
            _drain_body(max_upload_bytes)
            detail = f"The upload is over the {max_upload_bytes / 1048576:g} MB limit."
            if isinstance(exc, TooManyFormParts):
                return problem_response(PROBLEMS["too-many-parts"], exc.description)
        elif status == 405:
            allowed = sorted(m for m in getattr(exc, "valid_methods", None) or [])
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed here; use {', '.join(allowed)}."
        elif status == 404:
            detail = f"There is no endpoint at {request.path}; GET /openapi.json lists them."
        else:
            detail = exc.description or exc.name
        slug = _HTTP_PROBLEMS.get(status)
        problem = (
            PROBLEMS[slug]
            if slug
            else ProblemType(f"http-{status}", status, exc.name, exc.description or exc.name)
        )
        return problem_response(problem, detail, headers)

    @app.errorhandler(TimeoutError)
    def _read_timeout(exc: TimeoutError) -> Response:
        # The server gave up waiting for the rest of the body (penguin_api.worker).
        return problem_response(
            PROBLEMS["request-timeout"],
            "The request body did not arrive in full in time; send it again.",
            {"Connection": "close"},
        )

    @app.errorhandler(ParseException)
    def _bad_body_framing(exc: ParseException) -> Response:
        # Gunicorn's reader met framing the worker's loop let through (it refuses all it
        # knows of first, penguin_api.chunked): still the client's fault, never a 500.
        _log.warning("body framing refused by Gunicorn's reader: %s", exc)
        return problem_response(
            PROBLEMS["bad-framing"], f"The request body could not be read: {exc}."
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        _log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        return problem_response(
            PROBLEMS["internal-error"],
            "The server failed to answer this request. Quote the X-Request-Id header "
            "if you report it.",
        )


def _drain_body(limit: int) -> None:
    """Read and drop what is left of a refused upload, so the client sees our 413.

    Closing a socket with unread data makes the kernel send a reset, which most
    clients report as a connection error instead of the answer. The read is bounded.
    """
    stream = request.environ.get("wsgi.input")
    length = request.content_length
    if stream is None:
        return
    budget = min(length if length is not None else limit, 4 * limit, 64 * 1048576)
    try:
        while budget > 0:
            chunk = stream.read(min(65536, budget))
            if not chunk:
                break
            budget -= len(chunk)
    except Exception:
        pass
