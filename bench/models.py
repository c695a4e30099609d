"""Find the model variants to time: the shipped one, and its fp32 or int8 sibling if kept.

The shipped file's precision comes from its card (``quantization``). The other precision
is looked for beside it (a file whose name says ``fp32`` or ``int8``) or given explicitly.
When only an int8 QDQ model exists, its float graph is rebuilt (bench.dequantize) so
that fp32 can still be timed; an fp32-only model is reported as such.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from .dequantize import NotQdqError, dequantize_qdq

MODEL_FILE = "penguin-classifier.onnx"
CARD_FILE = "model-card.json"
_TAGS = {"int8": ("int8", "quant", "qdq"), "fp32": ("fp32", "float")}


@dataclass(frozen=True)
class ModelVariants:
    """The shipped model and the per-precision files found for it."""

    shipped: Path
    card: dict
    files: dict[str, Path] = field(default_factory=dict)
    note: str = ""

    @property
    def shipped_precision(self) -> str:
        return str(self.card.get("quantization") or "fp32")


def find_variants(
    model_dir: Path, fp32: Path | None = None, int8: Path | None = None
) -> ModelVariants:
    """The shipped model in `model_dir` and every precision variant available for it."""
    shipped = model_dir / MODEL_FILE
    if not shipped.is_file():
        raise FileNotFoundError(f"no model at {shipped}; build it with `make train`")
    card_path = model_dir / CARD_FILE
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    precision = str(card.get("quantization") or "fp32")
    files: dict[str, Path] = {precision: shipped}
    for other in sorted(model_dir.glob("*.onnx")):
        if other == shipped:
            continue
        for tag, words in _TAGS.items():
            if tag not in files and any(w in other.name.lower() for w in words):
                files[tag] = other
    for tag, given in (("fp32", fp32), ("int8", int8)):
        if given is not None:
            files[tag] = given
    missing = [tag for tag in _TAGS if tag not in files]
    note = (
        f"only {precision} exists (shipped); no {', '.join(missing)} variant was found "
        f"beside it in {model_dir}, so there is no precision comparison"
        if missing
        else f"shipped: {precision}; compared with {', '.join(str(p) for p in files.values())}"
    )
    return ModelVariants(shipped=shipped, card=card, files=files, note=note)


def with_rebuilt_fp32(variants: ModelVariants, scratch: Path) -> ModelVariants:
    """`variants` plus an fp32 rebuilt from the int8 QDQ graph when no fp32 file exists."""
    if "fp32" in variants.files or "int8" not in variants.files:
        return variants
    try:
        fp32 = dequantize_qdq(variants.files["int8"], scratch / "fp32-rebuilt.onnx")
    except NotQdqError as exc:
        return replace(variants, note=f"{variants.note}; no fp32 could be rebuilt: {exc}")
    note = (
        "shipped: int8; no fp32 file is kept, so fp32 is the shipped int8 QDQ graph with "
        "its quantisation folded back out (same operators on float data: fp32's cost)"
    )
    return replace(variants, files={**variants.files, "fp32": fp32}, note=note)
