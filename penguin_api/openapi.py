"""GET /openapi.json: the hand-written OpenAPI 3.1 description of every endpoint.

Kept next to the code it describes and checked against live answers by the tests;
when an endpoint changes, this document changes in the same commit.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from penguin_api import imaging
from penguin_api.errors import PROBLEM_JSON, PROBLEMS
from penguin_api.openapi_schemas import schemas

bp = Blueprint("openapi", __name__)

_HEADERS = {
    "X-Request-Id": {
        "description": "The caller's X-Request-Id if it was a sane token, else a new one.",
        "schema": {"type": "string"},
    },
    "X-Instance-Id": {
        "description": "The worker process that answered; stable for the worker's life.",
        "schema": {"type": "string"},
    },
    "Server-Timing": {
        "description": "Milliseconds spent per stage: decode, infer (predictions only), total.",
        "schema": {"type": "string"},
    },
    "X-Cold-Start": {
        "description": "`1` on the first request a worker process serves, not counting "
        "/health, /ready and /metrics (probes and scrapes do not use it up).",
        "schema": {"type": "string", "enum": ["1"]},
    },
}
_HEADER_REFS = {name: {"$ref": f"#/components/headers/{name}"} for name in _HEADERS}


def _problem(*slugs: str) -> dict[str, Any]:
    """A response whose body is a problem of one of the given types."""
    problems = [PROBLEMS[s] for s in slugs]
    return {
        "description": "; ".join(f"{p.title}: {p.description}" for p in problems),
        "headers": _HEADER_REFS,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _HEADER_REFS,
        "content": {"application/json": {"schema": schema}},
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _upload_body(many: bool) -> dict[str, Any]:
    file_schema = {"type": "string", "format": "binary", "contentMediaType": "image/*"}
    field = {"type": "array", "items": file_schema, "minItems": 1} if many else file_schema
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": field}, "required": ["file"]}
            }
        },
    }


#: What any request may get from the HTTP parser, before an endpoint sees it.
_HEAD_ERRORS = {
    "414": _problem("request-line-too-long"),
    "417": _problem("expectation-failed"),
    "431": _problem("headers-too-large"),
}
_UPLOAD_ERRORS = {
    "408": _problem("request-timeout"),
    "411": _problem("length-required"),
    "413": _problem("upload-too-large", "too-many-parts", "image-too-large"),
    **_HEAD_ERRORS,
    "415": _problem("unsupported-image", "unsupported-content-type"),
    "501": _problem("unsupported-transfer-coding"),
    "503": _problem("not-ready"),
    "500": _problem("internal-error"),
}


def _paths() -> dict[str, Any]:
    common_errors = {
        "400": _problem("bad-request"),
        **_HEAD_ERRORS,
        "500": _problem("internal-error"),
    }
    ready_errors = {"503": _problem("not-ready"), **common_errors}
    return {
        "/predict": {
            "post": {
                "operationId": "predict",
                "summary": "Classify one photo",
                "description": f"Accepted formats: {imaging.ACCEPTED_FORMATS_TEXT}.",
                "requestBody": _upload_body(many=False),
                "responses": {
                    "200": _json("The species, or that there is no penguin.", _ref("Prediction")),
                    "400": _problem(
                        "missing-file", "empty-file", "too-many-files", "bad-request", "bad-framing"
                    ),
                    **_UPLOAD_ERRORS,
                },
            }
        },
        "/predict/batch": {
            "post": {
                "operationId": "predictBatch",
                "summary": "Classify several photos in one model run",
                "description": "One result per `file` part, in order; a bad file gets an "
                "`error` problem object in its entry and does not fail the others.",
                "requestBody": _upload_body(many=True),
                "responses": {
                    "200": _json("One entry per file, in order.", _ref("BatchResult")),
                    "400": _problem("missing-file", "too-many-files", "bad-request", "bad-framing"),
                    **_UPLOAD_ERRORS,
                },
            }
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness: the process answers",
                "responses": {
                    "200": _json(
                        "Alive.",
                        {
                            "type": "object",
                            "properties": {"status": {"const": "ok"}},
                            "required": ["status"],
                        },
                    ),
                    **common_errors,
                },
            }
        },
        "/ready": {
            "get": {
                "operationId": "ready",
                "summary": "Readiness: the model is loaded, verified and warmed up",
                "responses": {
                    "200": _json(
                        "Ready to classify.",
                        {
                            "type": "object",
                            "properties": {"status": {"const": "ready"}, "model": _ref("ModelRef")},
                            "required": ["status", "model"],
                        },
                    ),
                    **ready_errors,
                },
            }
        },
        "/model": {
            "get": {
                "operationId": "modelCard",
                "summary": "The model card: version, SHA-256, labels, thresholds, metrics",
                "responses": {"200": _json("The model card.", _ref("ModelCard")), **ready_errors},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics, summed over all workers",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format 0.0.4.",
                        "headers": _HEADER_REFS,
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **common_errors,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": _json("OpenAPI 3.1 document.", {"type": "object"})},
            }
        },
        "/problems/{slug}": {
            "get": {
                "operationId": "problemType",
                "summary": "What a problem `type` URI means",
                "parameters": [
                    {
                        "name": "slug",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": sorted(PROBLEMS)},
                    }
                ],
                "responses": {
                    "200": _json("The problem type.", _ref("ProblemType")),
                    "404": _problem("not-found"),
                },
            }
        },
        "/": {
            "get": {
                "operationId": "uploadPage",
                "summary": "The upload page: pick or drop a photo and see the answer",
                "responses": {
                    "200": {
                        "description": "HTML page.",
                        "headers": _HEADER_REFS,
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Penguin Classification API",
            "version": "1.0.0",
            "description": "Upload a photo; get the penguin species and a calibrated "
            "confidence, or a plain statement that there is no penguin. Errors are "
            "RFC 9457 problem+json.",
        },
        "paths": _paths(),
        "components": {"schemas": schemas(), "headers": _HEADERS},
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """Serve the document."""
    return jsonify(document())
