"""The usual way to serve this model, as a user would first write it: the comparison point.

FastAPI + uvicorn in one process, an ``async def`` endpoint as the FastAPI tutorials show,
the whole upload decoded by Pillow at full size and resized to the model's input size (its
card's ``input.size``), and one ONNX Runtime session with its default threading. The same
ONNX model and the same answer fields as the service, so the benchmark compares serving
strategies, not models.

Run: ``BENCH_ALT_MODEL=model/penguin-classifier.onnx uvicorn bench.alt_fastapi:app``.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, File, HTTPException, UploadFile
from PIL import Image

MODEL_PATH = Path(os.environ.get("BENCH_ALT_MODEL", "model/penguin-classifier.onnx"))
_card = json.loads(MODEL_PATH.with_name("model-card.json").read_text())
LABELS: list[str] = _card["labels"]
SIZE = int(_card["input"]["size"])

session = ort.InferenceSession(str(MODEL_PATH), providers=["CPUExecutionProvider"])
app = FastAPI(title="penguin classifier (FastAPI baseline)")


@app.post("/predict")
async def predict(file: UploadFile = File(...)) -> dict:  # noqa: B008 - FastAPI's idiom
    """Decode the whole photo, squash it to SIZE x SIZE, run the model once."""
    data = await file.read()
    try:
        image = Image.open(io.BytesIO(data)).convert("RGB").resize((SIZE, SIZE))
    except Exception as exc:  # any decode failure is the client's
        raise HTTPException(status_code=415, detail="not an image") from exc
    batch = np.asarray(image, dtype=np.uint8)[None]
    probs, score = session.run(None, {"image": batch})
    best = int(np.argmax(probs[0]))
    return {
        "species": LABELS[best],
        "confidence": float(probs[0][best]),
        "penguin_score": float(score[0]),
    }


@app.get("/health")
async def health() -> dict:
    """Liveness, for the benchmark to know the server is up."""
    return {"status": "ok"}
