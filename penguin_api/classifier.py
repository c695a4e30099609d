"""The model: load and verify it against its card, warm it up, classify image arrays.

Knows nothing of HTTP. Anything wrong with the model files raises ModelError with a
message an operator can act on; the service refuses to start on it.

A species answer whose confidence is below the card's `thresholds.confident` is marked
uncertain; a card without that threshold marks no answer uncertain.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MODEL_FILE = "penguin-classifier.onnx"
CARD_FILE = "model-card.json"
INPUT_NAME = "image"
PROBS_OUTPUT = "species_probs"
SCORE_OUTPUT = "penguin_score"
_REQUIRED_CARD_KEYS = ("name", "version", "sha256", "labels", "thresholds")


class ModelError(Exception):
    """The model files are missing, damaged, altered or do not match their card."""


@dataclass(frozen=True)
class ModelCard:
    """The parts of model-card.json the service relies on, plus the card itself."""

    name: str
    version: str
    file: str
    sha256: str
    labels: tuple[str, ...]
    penguin_threshold: float
    input_size: int
    raw: dict[str, Any] = field(repr=False, compare=False)
    #: Species answers below this confidence are uncertain; None: none ever is.
    confident_threshold: float | None = None

    @classmethod
    def from_file(cls, path: Path) -> ModelCard:
        """Read and check a card; ModelError says what is wrong with it."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"model card not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"model card {path} is not readable JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ModelError(f"model card {path} is not a JSON object")
        missing = [key for key in _REQUIRED_CARD_KEYS if key not in raw]
        if missing:
            raise ModelError(f"model card {path} lacks {', '.join(missing)}")
        labels = raw["labels"]
        if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
            raise ModelError(f"model card {path}: labels must be a non-empty list of names")
        try:
            threshold = float(raw["thresholds"]["penguin_score"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"model card {path}: thresholds.penguin_score is missing") from None
        return cls(
            name=str(raw["name"]),
            version=str(raw["version"]),
            file=str(raw.get("file", MODEL_FILE)),
            sha256=str(raw["sha256"]).lower(),
            labels=tuple(labels),
            penguin_threshold=threshold,
            input_size=_input_size(raw.get("input"), path),
            raw=raw,
            confident_threshold=_confident_threshold(raw["thresholds"], path),
        )


def _input_size(spec: Any, path: Path) -> int:
    """`input.size`: the side of the square image the model takes, which the service makes.

    No default: the size changes with the model, and a service that guessed it would feed
    the model images it was not built for (the graph check would then refuse the model).
    """
    value = spec.get("size") if isinstance(spec, dict) else None
    # bool is an int to Python; a float like 320.0 is not a side length either.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        shown = "missing" if value is None else json.dumps(value)[:40]
        raise ModelError(
            f"model card {path}: input.size (the side of the square image the model takes) "
            f"must be a positive whole number, is {shown}"
        )
    return value


def _confident_threshold(thresholds: dict[str, Any], path: Path) -> float | None:
    """`thresholds.confident` as a probability in (0, 1], or None when the card has none."""
    if "confident" not in thresholds:
        return None
    value = thresholds["confident"]
    # bool is an int to Python, and json reads NaN and Infinity: refuse all three.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ModelError(
            f"model card {path}: thresholds.confident must be a probability in (0, 1] "
            f"(or absent), not {shown}"
        )
    return float(value)


@dataclass(frozen=True)
class Prediction:
    """What the model says about one image, in the API's vocabulary."""

    species: str | None
    confidence: float | None
    #: The confidence is below the card's threshold; None when there is no species answer.
    uncertain: bool | None
    is_penguin: bool
    penguin_score: float
    top_k: tuple[tuple[str, float], ...]
    model_name: str
    model_version: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON body of a successful /predict (and one line of `penguin-api predict`)."""
        return {
            "species": self.species,
            "confidence": self.confidence,
            "uncertain": self.uncertain,
            "is_penguin": self.is_penguin,
            "penguin_score": self.penguin_score,
            "top_k": [{"species": s, "confidence": c} for s, c in self.top_k],
            "model": {"name": self.model_name, "version": self.model_version},
        }


def read_verified_model(model_dir: Path) -> tuple[ModelCard, bytes]:
    """The card and the ONNX bytes, after checking the bytes' SHA-256 against the card.

    The same bytes that were hashed are the ones handed to ONNX Runtime, so the file
    cannot change between the check and the load.
    """
    card = ModelCard.from_file(model_dir / CARD_FILE)
    model_path = model_dir / card.file
    try:
        data = model_path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model file not found: {model_path}") from None
    except OSError as exc:
        raise ModelError(f"model file {model_path} is not readable: {exc}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != card.sha256:
        raise ModelError(
            f"model file {model_path} fails its sha256 checksum: card says {card.sha256}, "
            f"file ({len(data):,} bytes) has {actual}; it is truncated, altered or not the "
            "file the card describes"
        )
    return card, data


class Classifier:
    """One ONNX Runtime session and the card that explains its outputs.

    Build it with `Classifier.load` in the process that will use it: ONNX Runtime
    sessions do not survive fork, so every Gunicorn worker loads its own.
    """

    def __init__(self, card: ModelCard, session: Any, top_k: int = 3) -> None:
        self.card = card
        self._session = session
        self._top_k = max(1, min(top_k, len(card.labels)))
        self.load_seconds = 0.0

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        threads: int = 1,
        top_k: int = 3,
        warmup_runs: int = 1,
        optimize: bool = True,
    ) -> Classifier:
        """Verify, load and warm up the model in `model_dir`; ModelError if anything is off.

        `optimize=False` skips ONNX Runtime's graph optimisations: quicker to load, slower
        to run; for a check that the model loads and fits its card, not for serving.
        """
        started = time.perf_counter()
        card, data = read_verified_model(model_dir)
        session = _session(data, threads, model_dir / card.file, optimize)
        _check_signature(session, card)
        classifier = cls(card, session, top_k)
        # The first runs allocate buffers and pick kernels; doing them now keeps that
        # cost off the first user's request, and proves the outputs fit the card.
        # The second run uses a batch of two: /predict/batch must work too.
        for run in range(max(1, warmup_runs)):
            classifier._check_outputs(batch=2 if run == 1 else 1)
        classifier.load_seconds = time.perf_counter() - started
        return classifier

    @property
    def input_size(self) -> int:
        """Side of the square image the model takes."""
        return self.card.input_size

    def predict(self, images: np.ndarray) -> list[Prediction]:
        """Classify a batch: uint8 RGB `[N, size, size, 3]` -> one Prediction per image."""
        size = self.input_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(
                f"expected uint8 [N, {size}, {size}, 3], got {images.dtype} {images.shape}"
            )
        if len(images) == 0:
            return []
        probs, scores = self._run(images)
        return [self._prediction(p, float(s)) for p, s in zip(probs, scores, strict=True)]

    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's outputs for a batch, computed one image at a time.

        One run over the whole batch saves nothing on one intra-op thread (measured: 16
        images of 320 px in one run 332 ms of CPU, in 16 runs 306 ms), and its activations
        stay in the session's memory arena for the life of the worker: 16 at once grew a
        worker by about 600 MiB.
        """
        parts = [
            self._session.run(
                [PROBS_OUTPUT, SCORE_OUTPUT], {INPUT_NAME: np.ascontiguousarray(images[i : i + 1])}
            )
            for i in range(len(images))
        ]
        probs = np.concatenate([np.asarray(p, dtype=np.float64) for p, _ in parts])
        scores = np.concatenate([np.asarray(s, dtype=np.float64) for _, s in parts])
        return probs, scores

    def _prediction(self, probs: np.ndarray, score: float) -> Prediction:
        order = np.argsort(-probs, kind="stable")[: self._top_k]
        top = tuple((self.card.labels[i], round(float(probs[i]), 4)) for i in order)
        is_penguin = score >= self.card.penguin_threshold
        return Prediction(
            species=top[0][0] if is_penguin else None,
            confidence=top[0][1] if is_penguin else None,
            uncertain=self._uncertain(top[0][1]) if is_penguin else None,
            is_penguin=bool(is_penguin),
            penguin_score=round(score, 4),
            top_k=top,
            model_name=self.card.name,
            model_version=self.card.version,
        )

    def _uncertain(self, confidence: float) -> bool:
        """The species answer is too unsure to stand alone.

        Compared as reported (rounded), so a client sees `confidence < thresholds.confident`
        hold for every answer marked uncertain, and for no other.
        """
        threshold = self.card.confident_threshold
        return threshold is not None and confidence < threshold

    def _check_outputs(self, batch: int) -> None:
        """Run a blank batch and check the output shapes against the card's labels."""
        size = self.input_size
        try:
            probs, scores = self._run(np.full((batch, size, size, 3), 127, dtype=np.uint8))
        except ValueError as exc:  # outputs without a batch axis cannot be joined
            raise ModelError(f"model outputs do not have a batch axis: {exc}") from None
        n_labels = len(self.card.labels)
        if probs.shape != (batch, n_labels) or scores.shape != (batch,):
            raise ModelError(
                f"model outputs {PROBS_OUTPUT}{list(probs.shape)} and {SCORE_OUTPUT}"
                f"{list(scores.shape)} for a batch of {batch}, but the card lists "
                f"{n_labels} labels: card and model do not belong together"
            )
        if not (np.all(np.isfinite(probs)) and np.all(np.isfinite(scores))):
            raise ModelError("model produces non-finite outputs on a blank image")


def _session(data: bytes, threads: int, path: Path, optimize: bool = True) -> Any:
    """An ONNX Runtime CPU session over the model bytes."""
    import onnxruntime as ort  # heavy; imported only where a model is actually loaded

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    levels = ort.GraphOptimizationLevel
    options.graph_optimization_level = levels.ORT_ENABLE_ALL if optimize else levels.ORT_DISABLE_ALL
    # Spinning threads burn a CPU between requests that other workers could use.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"ONNX Runtime cannot load {path}: {first_line}") from None


def _check_signature(session: Any, card: ModelCard) -> None:
    """The graph's input and outputs must be the ones the model contract names."""
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(uint8)":
        found = ", ".join(f"{i.name}: {i.type}" for i in inputs)
        raise ModelError(f"model input must be one uint8 tensor named '{INPUT_NAME}', has {found}")
    shape = inputs[0].shape
    size = card.input_size
    if len(shape) != 4 or [d for d in shape[1:] if isinstance(d, int)] != [size, size, 3]:
        raise ModelError(f"model input shape {shape} is not [N, {size}, {size}, 3] (NHWC)")
    outputs = {o.name: o for o in session.get_outputs()}
    for name in (PROBS_OUTPUT, SCORE_OUTPUT):
        if name not in outputs:
            raise ModelError(f"model has no output named '{name}' (has {', '.join(outputs)})")
    columns = outputs[PROBS_OUTPUT].shape[-1]
    if isinstance(columns, int) and columns != len(card.labels):
        raise ModelError(
            f"model's {PROBS_OUTPUT} has {columns} columns but the card lists "
            f"{len(card.labels)} labels"
        )
