"""The JSON Schemas of /openapi.json: answers, batch results, problems, the model card."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def schemas() -> dict[str, Any]:
    """The components/schemas section: every body the API sends."""
    probability = {"type": "number", "minimum": 0, "maximum": 1}
    guess = {
        "type": "object",
        "properties": {"species": {"type": "string"}, "confidence": probability},
        "required": ["species", "confidence"],
    }
    prediction_props = {
        "species": {
            "type": ["string", "null"],
            "description": "Most likely species; null when no penguin is seen.",
        },
        "confidence": {
            "type": ["number", "null"],
            "minimum": 0,
            "maximum": 1,
            "description": "Calibrated probability of `species`; null when no penguin.",
        },
        "uncertain": {
            "type": ["boolean", "null"],
            "description": "True when `confidence` is below the model card's "
            "`thresholds.confident` (chosen so that answers at or above it are right at "
            "least 95 % of the time): read `species` as the most likely of `top_k`, not as "
            "a sure answer. False at or above it, and always when the card sets no such "
            "threshold. Null when no penguin is seen: there is no species answer to doubt.",
        },
        "is_penguin": {"type": "boolean"},
        "penguin_score": {**probability, "description": "Compared with the card's threshold."},
        "top_k": {"type": "array", "items": guess, "minItems": 1},
        "model": _ref("ModelRef"),
    }
    return {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details.",
            "properties": {
                "type": {"type": "string", "format": "uri-reference"},
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
                "request_id": {"type": "string"},
            },
            "required": ["type", "title", "status", "detail"],
        },
        "ProblemType": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "description": {"type": "string"},
            },
            "required": ["type", "title", "status", "description"],
        },
        "ModelRef": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
            "required": ["name", "version"],
        },
        "Prediction": {
            "type": "object",
            "properties": prediction_props,
            "required": list(prediction_props),
        },
        "BatchEntry": {
            "description": "A prediction with its filename, or the filename and an error.",
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"filename": {"type": ["string", "null"]}, **prediction_props},
                    "required": ["filename", *prediction_props],
                },
                {
                    "type": "object",
                    "properties": {
                        "filename": {"type": ["string", "null"]},
                        "error": _ref("Problem"),
                    },
                    "required": ["filename", "error"],
                },
            ],
        },
        "BatchResult": {
            "type": "object",
            "properties": {
                "results": {"type": "array", "items": _ref("BatchEntry")},
                "succeeded": {"type": "integer", "minimum": 0},
                "failed": {"type": "integer", "minimum": 0},
                "model": _ref("ModelRef"),
            },
            "required": ["results", "succeeded", "failed", "model"],
        },
        "ModelCard": {
            "type": "object",
            "description": "model/model-card.json as shipped (more keys may appear).",
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "labels": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "thresholds": {
                    "type": "object",
                    "properties": {
                        "penguin_score": {
                            **probability,
                            "description": "A photo counts as a penguin from this score.",
                        },
                        "confident": {
                            "type": "number",
                            "exclusiveMinimum": 0,
                            "maximum": 1,
                            "description": "Species answers below this confidence are "
                            "marked `uncertain`; absent: none is.",
                        },
                    },
                    "required": ["penguin_score"],
                },
                "input": {"type": "object"},
                "metrics": {"type": "object"},
                "training_data": {"type": "object"},
            },
            "required": ["name", "version", "sha256", "labels", "thresholds"],
        },
    }
