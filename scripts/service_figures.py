"""Two figures for the service, each measured side by side with what it is compared to.

1. Launch to first prediction: `gunicorn -c gunicorn.conf.py` started from nothing until a
   POST /predict answers 200, against a bare Python process that imports onnxruntime,
   loads the model and predicts once. Target: at most 2x.
2. Upload size: end-to-end /predict latency for a 12-megapixel JPEG against a JPEG of the
   model's input size (its card's `input.size`) on a running server. Target: at most 3x.

Run: `.venv/bin/python scripts/service_figures.py [--photo P] [--rounds N]`. The 12 MP
photo is made from a real photo (upscaled, with sensor-like noise) in a temporary folder;
nothing is written to the repository. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from penguin_api.classifier import CARD_FILE, ModelCard  # noqa: E402
from tests.server import free_port, running_server, server_env  # noqa: E402

# The input side comes from the card, read by the parent: the bare process does no more
# than import onnxruntime, load the model and predict once.
BARE = """
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
n = int(sys.argv[2])
s.run(None, {"image": np.zeros((1, n, n, 3), np.uint8)})
"""


def launch_to_first_prediction(model_dir: Path, photo: bytes, workers: int) -> float:
    """Seconds from spawning Gunicorn until its first 200 on /predict."""
    port = free_port()
    env = server_env(port, workers, model_dir, None)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py"),
         "penguin_api.wsgi:app"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while proc.poll() is None and time.perf_counter() - started < 120:
            try:
                r = requests.post(
                    f"http://127.0.0.1:{port}/predict", files={"file": photo}, timeout=30
                )
                if r.status_code == 200:
                    return time.perf_counter() - started
            except requests.ConnectionError:
                pass
            time.sleep(0.01)
        raise RuntimeError("server did not answer")
    finally:
        proc.terminate()
        proc.wait(20)


def bare_first_prediction(model_dir: Path, card: ModelCard) -> float:
    """Seconds for a bare process: import onnxruntime, load the model, predict once."""
    started = time.perf_counter()
    model = str(model_dir / card.file)
    subprocess.run([sys.executable, "-c", BARE, model, str(card.input_size)], check=True)
    return time.perf_counter() - started


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def photos(source: Path, side: int) -> tuple[bytes, bytes]:
    """(`side` px square JPEG, 12 MP JPEG) made from one real photo."""
    img = Image.open(source).convert("RGB")
    small = img.resize((side, side), Image.Resampling.LANCZOS)
    big = img.resize((4032, 3024), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(0).normal(0, 4, (3024, 4032, 3))
    big = Image.fromarray(np.clip(np.asarray(big) + noise, 0, 255).astype(np.uint8))
    return jpeg(small), jpeg(big)


def latency(url: str, data: bytes, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        r = requests.post(url, files={"file": ("p.jpg", data, "image/jpeg")}, timeout=60)
        out.append(time.perf_counter() - started)
        assert r.status_code == 200, r.text
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=REPO / "model")
    parser.add_argument("--photo", type=Path, help="a real photo (default: first shared val)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    photo = args.photo or sorted((REPO.parent / "shared/data/penguins/val").glob("*/*.jp*g"))[0]
    card = ModelCard.from_file(args.model_dir / CARD_FILE)
    small, big = photos(photo, card.input_size)

    launch, bare = [], []
    for _ in range(args.rounds):  # interleaved, so machine load hits both alike
        bare.append(bare_first_prediction(args.model_dir, card))
        launch.append(launch_to_first_prediction(args.model_dir, small, args.workers))

    with running_server(workers=1, model_dir=args.model_dir) as srv:
        url = srv.url("/predict")
        latency(url, small, 5), latency(url, big, 5)  # warm both paths
        small_s, big_s = [], []
        for _ in range(args.requests // 5):
            small_s += latency(url, small, 5)
            big_s += latency(url, big, 5)

    median = statistics.median
    result = {
        "launch_to_first_prediction_s": round(median(launch), 3),
        "bare_import_load_predict_s": round(median(bare), 3),
        "launch_ratio": round(median(launch) / median(bare), 2),
        "launch_target_ratio": 2.0,
        "input_size_px": card.input_size,
        "jpeg_input_size_bytes": len(small),
        "jpeg_12mp_bytes": len(big),
        "predict_input_size_median_ms": round(median(small_s) * 1000, 1),
        "predict_12mp_median_ms": round(median(big_s) * 1000, 1),
        "size_ratio": round(median(big_s) / median(small_s), 2),
        "size_target_ratio": 3.0,
        "rounds": args.rounds,
        "requests_each": len(small_s),
        "cpus": len(os.sched_getaffinity(0)),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        sys.exit(main())
