"""Where a service worker's time goes under load: py-spy on a live Gunicorn worker.

Starts the service as the benchmark does, keeps it busy with closed-loop clients, records
one worker with py-spy (wall clock, idle included, native frames), and sums the samples
by stage of the request path. Used when `make bench` misses a target.

    python -m bench.profile [--photos small|large] [--seconds 15] [--out reports/profile]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from penguin_api.classifier import CARD_FILE, ModelCard
from penguin_api.config import available_cpus
from tests.server import REPO_ROOT, running_server

from .loadgen import Client, closed_loop, multipart, warm_up
from .photos import load_photos

#: Stages of the request path, recognised by a frame's function or file (first match wins).
STAGES = (
    ("waiting for a request", ("accept", "select", "poll", "epoll_wait", "wait_for_")),
    ("model (ONNX Runtime)", ("onnxruntime", "InferenceSession.run", "_run_model")),
    ("decode + preprocess (Pillow)", ("PIL/", "imaging.py", "ImagingDecode", "jpeg_")),
    ("reading the upload (multipart)", ("formparser", "multipart", "wsgi.py:get_input")),
    ("metrics + logging", ("prometheus_client", "logging/", "telemetry.py")),
    ("Flask / Werkzeug / Gunicorn", ("flask/", "werkzeug/", "gunicorn/")),
)


def stage_of(stack: str) -> str:
    """The deepest recognised stage on a collapsed stack (leaf-most frame wins)."""
    frames = stack.split(";")
    for frame in reversed(frames):
        for stage, needles in STAGES:
            if any(n in frame for n in needles):
                return stage
    return "other"


def summarise(collapsed: Path) -> tuple[Counter, Counter]:
    """(samples per stage, samples per leaf frame) from py-spy's raw (collapsed) output."""
    stages: Counter = Counter()
    leaves: Counter = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stages[stage_of(stack)] += int(count)
        leaves[stack.split(";")[-1]] += int(count)
    return stages, leaves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--photos", choices=("small", "large"), default="small")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=Path("reports/profile"))
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "model")
    parser.add_argument("--workers", type=int, default=available_cpus())
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    size = ModelCard.from_file(args.model_dir / CARD_FILE).input_size
    photos = load_photos(REPO_ROOT / ".." / "shared" / "data", input_size=size)
    pool = photos.small if args.photos == "small" else photos.large
    uploads = [multipart(p.data) for p in pool]
    collapsed = args.out / f"worker-{args.photos}.txt"
    with running_server(workers=args.workers, model_dir=args.model_dir.resolve()) as srv:
        client = Client("127.0.0.1", srv.port)
        warm_up(client, uploads, 2 * args.workers)
        pid = srv.worker_pids()[0]
        cmd = [_py_spy(), "record", "--pid", str(pid), "--duration", str(int(args.seconds))]
        cmd += ["--rate", "200", "--native", "--format", "raw", "-o", str(collapsed)]
        recorder = threading.Thread(
            target=subprocess.run, args=(cmd,), kwargs={"capture_output": True}, daemon=True
        )
        recorder.start()
        load = closed_loop(client, uploads, 2 * args.workers, args.seconds + 1)
        recorder.join(args.seconds + 30)
    stages, leaves = summarise(collapsed)
    total = sum(stages.values()) or 1
    print(f"worker {pid}, {args.photos} photos, {load.throughput:.1f} req/s over all workers")
    for stage, n in stages.most_common():
        print(f"  {100 * n / total:5.1f}%  {stage}")
    print("top frames (self):")
    for frame, n in leaves.most_common(12):
        print(f"  {100 * n / total:5.1f}%  {frame[:110]}")
    print(f"collapsed stacks: {collapsed} (flamegraph.pl or speedscope.app read them)")
    return 0


def _py_spy() -> str:
    """py-spy is a console script (no module to -m); prefer the one beside this Python."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.is_file() else "py-spy"


if __name__ == "__main__":
    sys.exit(main())
