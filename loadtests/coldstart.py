"""How long a cold start takes: from launch (or from idle) to the first prediction.

    python -m loadtests.coldstart --target local -n 5            # Gunicorn from this checkout
    python -m loadtests.coldstart --target container -n 5        # the image from ./Dockerfile
    python -m loadtests.coldstart --target https://...run.app -n 3 --idle 960

local / container: start the server N times on a free 127.0.0.1 port and time launch ->
port accepting -> first 200 from POST /predict (the request waits in the listen backlog
while workers load the model), then one more request for the warm latency, then stop it.
URL: one request, then `--idle` seconds without traffic (default 16 min, past Cloud Run's
~15 min scale-down of idle instances), then the next; each first request's latency and
its X-Cold-Start flag are recorded next to a warm request made right after it.
Writes OUT/coldstart.json and OUT/coldstart.png.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import requests

from loadtests import launch
from loadtests.images import photo_like_jpeg
from loadtests.recording import parse_server_timing

DEFAULT_IDLE_S = 16 * 60
IMAGE_TAG = "penguin-api:coldstart"
CONTAINER_PORT = 8080


def predict(base_url: str, photo: bytes, timeout: float = 120.0) -> dict:
    """POST one photo to /predict; what the client saw, including the cold-start headers."""
    start = time.perf_counter()
    resp = requests.post(
        base_url + "/predict", files={"file": ("photo.jpg", photo, "image/jpeg")}, timeout=timeout
    )
    return {
        "latency_ms": round((time.perf_counter() - start) * 1000, 2),
        "status": resp.status_code,
        "cold": resp.headers.get("X-Cold-Start", "").strip() == "1",
        "instance": resp.headers.get("X-Instance-Id"),
        "timing": parse_server_timing(resp.headers.get("Server-Timing")),
    }


def _first_prediction(base_url: str, port: int, photo: bytes, t0: float, proc, timeout: float):
    """Time to the port accepting, then to the first answered /predict, both from t0."""
    launch.wait_until(lambda: launch.accepting(port), proc, timeout, "accepting connections")
    listen_s = time.perf_counter() - t0
    while True:  # a container's port may be forwarded before the server behind it listens
        try:
            first = predict(base_url, photo, timeout=timeout)
            break
        except requests.ConnectionError:
            if time.perf_counter() - t0 > timeout:
                raise
            time.sleep(0.05)
    first_s = time.perf_counter() - t0
    return listen_s, first_s, first


def sample_local(i: int, photo: bytes, out: Path, timeout: float) -> dict:
    """Launch Gunicorn, wait for the first prediction, ask once more warm, stop it."""
    port = launch.free_port()
    base = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = launch.start_gunicorn(port, out / f"coldstart-server-{i}.log")
    try:
        listen_s, first_s, first = _first_prediction(base, port, photo, t0, proc, timeout)
        warm = predict(base, photo)
    finally:
        launch.stop(proc)
    return _sample(i, listen_s, first_s, first, warm)


def sample_container(
    i: int, photo: bytes, tool: str, image: str, run_args: list[str], timeout: float
) -> dict:
    """Start the image detached, wait for the first prediction, ask once more, remove it."""
    port = launch.free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        tool,
        "run",
        "-d",
        "--rm",
        "-p",
        f"127.0.0.1:{port}:{CONTAINER_PORT}",
        "-e",
        f"PORT={CONTAINER_PORT}",
        *run_args,
        image,
    ]
    t0 = time.perf_counter()
    cid = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    try:
        listen_s, first_s, first = _first_prediction(base, port, photo, t0, None, timeout)
        warm = predict(base, photo)
    finally:
        subprocess.run([tool, "rm", "-f", cid], capture_output=True, check=False)
    return _sample(i, listen_s, first_s, first, warm)


def sample_url(i: int, url: str, photo: bytes) -> dict:
    """One request after idling (the caller waits), then one right after it for comparison."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    first = predict(url, photo)
    warm = predict(url, photo)
    return {"i": i, "at": at, "first": first, "warm": warm}


def _sample(i: int, listen_s: float, first_s: float, first: dict, warm: dict) -> dict:
    return {
        "i": i,
        "listen_s": round(listen_s, 3),
        "first_prediction_s": round(first_s, 3),
        "first": first,
        "warm": warm,
    }


def summarize(samples: list[dict]) -> dict:
    """Median, min and max of each measured duration, and how many first answers were cold."""

    def stats(values: list[float]) -> dict | None:
        if not values:
            return None
        return {
            "median": round(statistics.median(values), 3),
            "min": round(min(values), 3),
            "max": round(max(values), 3),
        }

    ok = [s for s in samples if s["first"]["status"] == 200]
    out = {
        "samples": len(samples),
        "first_ok": len(ok),
        "first_cold_flagged": sum(1 for s in samples if s["first"]["cold"]),
        "first_request_ms": stats([s["first"]["latency_ms"] for s in ok]),
        "warm_request_ms": stats([s["warm"]["latency_ms"] for s in ok]),
    }
    if samples and "first_prediction_s" in samples[0]:
        out["launch_to_listen_s"] = stats([s["listen_s"] for s in samples])
        out["launch_to_first_prediction_s"] = stats([s["first_prediction_s"] for s in ok])
    return out


def chart(result: dict, path: Path) -> Path:
    """Per sample: launch -> listening -> first prediction (local/container), or first vs
    warm request latency with the cold flag (URL)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    x = [s["i"] for s in samples]
    fig, ax = plt.subplots(figsize=(8, 4))
    if result["mode"] == "url":
        first = [s["first"]["latency_ms"] for s in samples]
        warm = [s["warm"]["latency_ms"] for s in samples]
        colors = ["#d62728" if s["first"]["cold"] else "#ff9896" for s in samples]
        ax.bar([i - 0.2 for i in x], first, width=0.4, color=colors, label="first after idle")
        ax.bar([i + 0.2 for i in x], warm, width=0.4, color="#1f77b4", label="next (warm)")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"First request after {result['idle_s']:.0f} s idle (dark red: X-Cold-Start)")
    else:
        listen = [s["listen_s"] for s in samples]
        rest = [s["first_prediction_s"] - s["listen_s"] for s in samples]
        ax.bar(x, listen, color="#9467bd", label="launch -> port accepting")
        ax.bar(x, rest, bottom=listen, color="#d62728", label="-> first prediction")
        for i, s in zip(x, samples, strict=True):
            ax.annotate(
                f"{s['first_prediction_s']:.1f} s",
                (i, s["first_prediction_s"]),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_ylabel("seconds from launch")
        ax.set_title(f"Cold start, {result['mode']}: launch to first prediction")
    ax.set_xlabel("sample")
    ax.set_xticks(x)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def container_tool(preferred: str) -> str:
    """The container CLI to use: the one asked for, else podman, else docker."""
    for tool in [preferred] if preferred else ["podman", "docker"]:
        if shutil.which(tool):
            return tool
    raise SystemExit(f"no container tool found ({preferred or 'podman or docker'})")


def run(args: argparse.Namespace) -> dict:
    """Take the samples for args.target and write coldstart.json and coldstart.png."""
    args.out.mkdir(parents=True, exist_ok=True)
    photo = args.photo.read_bytes() if args.photo else photo_like_jpeg(1920, 1080, seed=1)
    target = args.target
    mode = "url" if target.startswith(("http://", "https://")) else target
    result: dict = {"target": target, "mode": mode, "n": args.n, "samples": []}
    if mode == "container":
        tool = container_tool(args.container)
        if not args.no_build:
            build = [tool, "build", "-t", args.image, *shlex.split(args.build_args), "."]
            print("coldstart: " + " ".join(build))
            subprocess.run(build, check=True, cwd=launch.REPO_ROOT)
        result.update(container=tool, image=args.image)
    elif mode == "url":
        result["idle_s"] = args.idle
    elif mode != "local":
        raise SystemExit(f"--target must be local, container or an http(s) URL, not {target!r}")
    for i in range(1, args.n + 1):
        if mode == "url" and i > 1:
            print(f"coldstart: idle {args.idle:.0f} s before sample {i}", flush=True)
            time.sleep(args.idle)
        if mode == "local":
            sample = sample_local(i, photo, args.out, args.timeout)
        elif mode == "container":
            run_args = shlex.split(args.run_args)
            sample = sample_container(i, photo, tool, args.image, run_args, args.timeout)
        else:
            sample = sample_url(i, target.rstrip("/"), photo)
        result["samples"].append(sample)
        print(f"coldstart: sample {i}: {json.dumps(sample)}", flush=True)
    result["summary"] = summarize(result["samples"])
    (args.out / "coldstart.json").write_text(json.dumps(result, indent=2) + "\n")
    chart(result, args.out / "coldstart.png")
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Measure cold starts: launch or idle to answer.")
    parser.add_argument("--target", default="local", help="local, container or an http(s) URL")
    parser.add_argument("-n", type=int, default=5, help="number of samples")
    parser.add_argument("--out", type=Path, default=Path("reports/coldstart"))
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE_S, help="URL: idle s between")
    parser.add_argument("--photo", type=Path, help="image to send (default: a generated 2 MP JPEG)")
    parser.add_argument("--timeout", type=float, default=180.0, help="s to wait for an answer")
    parser.add_argument("--container", default="", help="podman or docker (default: found)")
    parser.add_argument("--image", default=IMAGE_TAG, help="container image tag")
    parser.add_argument("--no-build", action="store_true", help="use --image as it is")
    parser.add_argument("--build-args", default="", help="extra options for `build`")
    parser.add_argument(
        "--run-args",
        default="--cpus 1 --memory 1g",
        help="extra options for `run` (default: a Cloud Run-sized box)",
    )
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("-n must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(json.dumps(result["summary"], indent=2))
    print(f"coldstart: wrote {args.out}/coldstart.json and {args.out}/coldstart.png")
    return 0 if result["summary"]["first_ok"] == result["n"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
