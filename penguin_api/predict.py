"""`penguin-api predict PHOTO...`: classify photos locally, no server needed.

Prints one JSON line per photo, the same JSON as POST /predict answers, plus the
photo's path; a photo that cannot be read gets a line with its problem object instead
(the same `error` entry as in a /predict/batch answer).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", nargs="+", type=Path, metavar="PHOTO", help="image files")
    parser.add_argument("--model-dir", type=Path, help="model directory (default: $MODEL_DIR)")


def run(args: argparse.Namespace) -> int:
    """Returns 0 if every photo was classified, 1 if any could not be, 2 on a model error."""
    from penguin_api import errors, imaging
    from penguin_api.classifier import Classifier, ModelError
    from penguin_api.config import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"penguin-api predict: {exc}", file=sys.stderr)
        return 2
    model_dir = args.model_dir or settings.model_dir
    try:
        classifier = Classifier.load(
            model_dir, threads=settings.ort_intra_op_threads, top_k=settings.top_k, warmup_runs=0
        )
    except ModelError as exc:
        print(f"penguin-api predict: {exc}", file=sys.stderr)
        return 2
    failures = 0
    for photo in args.photos:
        line: dict[str, object] = {"file": str(photo)}
        try:
            array = imaging.prepare(
                photo.read_bytes(),
                max_pixels=settings.max_image_pixels,
                size=classifier.input_size,
            )
        except OSError as exc:
            failures += 1
            line["error"] = {"title": "Unreadable file", "detail": f"{exc.strerror}."}
        except imaging.ImageError as exc:
            failures += 1
            line["error"] = errors.from_image_error(exc).to_problem()
        else:
            line.update(classifier.predict(array[None])[0].as_dict())
        print(json.dumps(line), flush=True)
    return 1 if failures else 0
