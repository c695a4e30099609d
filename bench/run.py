"""`make bench`: every figure of the benchmark in one run, as a table and as JSON.

Order: model alone and decode (one core, nothing else of ours running), then the floor
pool, the service and the FastAPI alternative all started, and measured in interleaved
rounds (floor, the batch tool `penguin-api predict`, service, alternative, ...) so that
whatever else the machine is doing weighs on all of them alike; then the service's open
loop at 5 req/s, then the floor's alone at the same rate; then memory.

    python -m bench.run [--seconds 15] [--out reports/bench.json]

BENCH_SECONDS (default 15) is the length of one measured phase; the run takes about
ten phases plus ~30 s of start-ups (BENCH_SECONDS=15: about 3.3 minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from penguin_api.classifier import CARD_FILE, ModelCard
from penguin_api.config import available_cpus
from penguin_api.imaging import prepare
from tests.server import REPO_ROOT, running_server

from . import report as rep
from .batch import BatchTool
from .decode import measure_decode
from .floor import MAX_PIXELS, Floor, FloorResult, model_latency
from .loadgen import Client, LoadResult, closed_loop, multipart, open_loop, warm_up
from .models import find_variants, with_rebuilt_fp32
from .photos import PhotoSet, load_photos
from .servers import memory, running_alternative, sched_ns

ROUNDS = 3
OPEN_LOOP_RATE = 5.0


@dataclass(frozen=True)
class BenchSettings:
    """What a run measures and where it writes; read once from arguments and environment."""

    seconds: float
    out: Path
    model_dir: Path
    shared_data: Path
    workers: int
    fp32_model: Path | None
    int8_model: Path | None

    @property
    def clients(self) -> int:
        return 2 * self.workers


def parse_settings(argv: list[str] | None = None) -> BenchSettings:
    """Arguments override the BENCH_* environment, which overrides the defaults."""
    env = os.environ
    data = REPO_ROOT / ".." / "shared" / "data"
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--seconds", type=float, default=float(env.get("BENCH_SECONDS") or 15))
    add("--out", type=Path, default=Path(env.get("BENCH_OUT") or "reports/bench.json"))
    add("--model-dir", type=Path, default=Path(env.get("BENCH_MODEL_DIR") or REPO_ROOT / "model"))
    add("--shared-data", type=Path, default=Path(env.get("BENCH_DATA") or data))
    add("--workers", type=int, default=int(env.get("BENCH_WORKERS") or available_cpus()))
    add("--fp32-model", type=Path, default=_opt_path(env.get("BENCH_FP32_MODEL")))
    add("--int8-model", type=Path, default=_opt_path(env.get("BENCH_INT8_MODEL")))
    args = parser.parse_args(argv)
    return BenchSettings(
        seconds=args.seconds, out=args.out, model_dir=args.model_dir.resolve(),
        shared_data=args.shared_data.resolve(), workers=args.workers,
        fp32_model=args.fp32_model, int8_model=args.int8_model,
    )  # fmt: skip


def _opt_path(raw: str | None) -> Path | None:
    return Path(raw) if raw else None


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def measure_models(cfg: BenchSettings, inputs: np.ndarray, scratch: Path) -> dict:
    """Latency per image of each precision variant, one thread, batch of 1."""
    variants = find_variants(cfg.model_dir, cfg.fp32_model, cfg.int8_model)
    variants = with_rebuilt_fp32(variants, scratch)
    _log(f"model alone: {', '.join(f'{t} ({p.name})' for t, p in variants.files.items())}")
    paths = {tag: str(path) for tag, path in sorted(variants.files.items())}
    timed = model_latency(paths, inputs, cfg.seconds * len(paths) / 3)
    both = "fp32" in timed and "int8" in timed
    return {
        "shipped": variants.shipped_precision,
        "variants": timed,
        # From CPU time: what each costs on a core of its own (wall-clock ratio beside it).
        "int8_speedup": rep.ratio(timed["fp32"]["cpu_p50_ms"], timed["int8"]["cpu_p50_ms"])
        if both
        else None,
        "int8_speedup_wall": rep.ratio(timed["fp32"]["p50_ms"], timed["int8"]["p50_ms"])
        if both
        else None,
        "note": variants.note,
    }


def measure_servers(cfg: BenchSettings, photos: PhotoSet, input_size: int) -> dict:
    """Floor, service and alternative in interleaved rounds; then open loops and memory."""
    small = [multipart(p.data) for p in photos.small]
    large = [multipart(p.data) for p in photos.large]
    window = cfg.seconds / 3
    shipped = cfg.model_dir / "penguin-classifier.onnx"
    _log(f"starting the floor ({cfg.workers} processes), the service and the alternative")
    floor = Floor(str(shipped), tuple(p.data for p in photos.small), cfg.workers, input_size)
    batch = BatchTool(photos.small, cfg.model_dir, cfg.workers)
    try:
        with running_server(workers=cfg.workers, model_dir=cfg.model_dir) as srv, \
                running_alternative(shipped) as alt:  # fmt: skip
            ours, theirs = Client("127.0.0.1", srv.port), Client("127.0.0.1", alt.port)
            for client in (ours, theirs):
                warm_up(client, small, cfg.clients)
                warm_up(client, large, cfg.clients)
            loads = {
                k: LoadResult() for k in ("ours_small", "ours_large", "alt_small", "alt_large")
            }
            ours_pids = [srv.proc.pid, *srv.worker_pids()]
            for r in range(ROUNDS):
                _log(
                    f"round {r + 1}/{ROUNDS}: floor, batch tool, service, alternative "
                    f"({window:.1f} s each)"
                )
                floor_rate = floor.measure(window)
                batch.measure(window, floor_rate)
                for key, client, uploads, pids in (
                    ("ours_small", ours, small, ours_pids),
                    ("alt_small", theirs, small, [alt.proc.pid]),
                    ("ours_large", ours, large, ours_pids),
                    ("alt_large", theirs, large, [alt.proc.pid]),
                ):
                    loads[key].add(_measured(client, uploads, cfg.clients, window, pids))
            _log(f"open loop: {OPEN_LOOP_RATE} req/s for {2 * cfg.seconds:.0f} s")
            workers = srv.worker_pids()
            before = sched_ns(workers)
            open_result = open_loop(ours, small, OPEN_LOOP_RATE, 2 * cfg.seconds, seed=5)
            after = sched_ns(workers)
            # Then the floor takes the same arrivals in-process, alone: what the machine's
            # own noise and the photos' spread do to p99 with no HTTP at all. Run at the
            # same time, the two competed for the same two cores and each widened the
            # other's tail.
            _log(f"open loop, floor alone: {OPEN_LOOP_RATE} photos/s for {cfg.seconds:.0f} s")
            paced = floor.paced_async(OPEN_LOOP_RATE, cfg.seconds, seed=5).get(
                timeout=cfg.seconds + 60
            )
            mem = {
                "service_master": memory(srv.proc.pid),
                "service_workers": [{"pid": pid, **memory(pid)} for pid in srv.worker_pids()],
                "alternative": memory(alt.proc.pid),
            }
    finally:
        floor.close()
        batch.close()
    mem["floor_process_rss_mb"] = [
        round(b / 2**20, 1) for b in floor.result.rss_bytes[-cfg.workers :]
    ]
    floor_figs = _floor_figures(floor.result, cfg.workers, *paced)
    ours_small = rep.load_figures(loads["ours_small"])
    open_figs = _open_loop_figures(open_result, before, after)
    alt_figs = {s: rep.load_figures(loads[f"alt_{s}"]) for s in ("small", "large")}
    ours_figs = {"small": ours_small, "large": rep.load_figures(loads["ours_large"])}
    batch_figs = {
        "command": "penguin-api predict FOLDER --out results.jsonl",
        "processes": cfg.workers,
        "throughput_rps": round(batch.result.throughput, 2),
        "photos": batch.result.photos,
        "seconds": round(batch.result.seconds, 1),
        "startup_s": batch.result.startup_s,
        "ratio_to_floor": rep.ratio(batch.result.throughput, floor_figs["throughput_rps"]),
    }
    return {
        "floor": floor_figs,
        "batch": batch_figs,
        "service": {
            "workers": cfg.workers,
            "clients": cfg.clients,
            "closed_loop": ours_figs,
            "ratio_to_floor": rep.ratio(ours_small["throughput_rps"], floor_figs["throughput_rps"]),
            # CPU per photo in the floor / CPU per request in the service's processes: how
            # much of the service's CPU goes to the work itself. Less sensitive than
            # throughput to how much CPU others on the machine take.
            "cpu_efficiency_vs_floor": rep.ratio(
                floor_figs["cpu_ms_per_photo"], ours_small.get("server_cpu_ms_per_request")
            ),
            "open_loop": open_figs,
        },
        "alternative": {
            "server": "FastAPI + uvicorn, 1 process, full Pillow decode + resize",
            "clients": cfg.clients,
            "closed_loop": alt_figs,
        },
        "ours_vs_alternative": {
            s: rep.ratio(ours_figs[s]["throughput_rps"], alt_figs[s]["throughput_rps"])
            for s in ("small", "large")
        },
        "memory": mem,
    }


def _floor_figures(
    fl: FloorResult, processes: int, paced_ms: list[float], paced_cpu_ms: list[float]
) -> dict:
    """The floor's closed-loop figures, and its in-process run at the open loop's rate."""
    paced, cpu = rep.percentiles(paced_ms), rep.percentiles(paced_cpu_ms)
    return {
        "processes": processes,
        "throughput_rps": round(fl.throughput, 2),
        "photos": fl.count,
        "seconds": round(fl.seconds, 1),
        "cpu_ms_per_photo": round(fl.cpu_seconds * 1000 / max(1, fl.count), 2),
        **rep.percentiles(fl.latencies_ms),
        "open_loop": {
            "rate_rps": OPEN_LOOP_RATE,
            "photos": len(paced_ms),
            "p50_ms": paced["p50_ms"],
            "p99_ms": paced["p99_ms"],
            "p99_over_p50": rep.ratio(paced["p99_ms"], paced["p50_ms"]),
            # The same photos' CPU cost: how far p99 would sit from p50 on idle cores.
            "cpu_p50_ms": cpu["p50_ms"],
            "cpu_p99_ms": cpu["p99_ms"],
            "cpu_p99_over_p50": rep.ratio(cpu["p99_ms"], cpu["p50_ms"]),
        },
    }


def _open_loop_figures(result: LoadResult, before: tuple[int, int], after: tuple[int, int]) -> dict:
    """Latency at the fixed rate, and the workers' CPU and core-wait per request."""
    figures = rep.load_figures(result)
    figures.pop("throughput_rps")
    figures["rate_rps"] = OPEN_LOOP_RATE
    figures["p99_over_p50"] = rep.ratio(figures["p99_ms"], figures["p50_ms"])
    figures["max_send_delay_ms"] = round(max(result.late_ms, default=0.0), 1)
    served = max(1, result.count + result.errors)
    figures["worker_cpu_ms_per_request"] = round((after[0] - before[0]) / 1e6 / served, 1)
    figures["worker_cpu_wait_ms_per_request"] = round((after[1] - before[1]) / 1e6 / served, 1)
    return figures


def _measured(
    client: Client, uploads: list, clients: int, seconds: float, pids: list[int]
) -> LoadResult:
    """A closed-loop window, with the CPU time the server and this client spent on it."""
    server0, client0 = sched_ns(pids)[0], time.process_time()
    result = closed_loop(client, uploads, clients, seconds)
    result.server_cpu_s = (sched_ns(pids)[0] - server0) / 1e9
    result.client_cpu_s = time.process_time() - client0
    return result


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True)  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    cfg = parse_settings(argv)
    if not (cfg.model_dir / "penguin-classifier.onnx").is_file():
        print(f"bench: no model in {cfg.model_dir}; build one with `make train`", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.UTC)
    load_before = [round(x, 2) for x in os.getloadavg()]
    # The model's input side, as the service reads it: every preprocessing here follows it.
    size = ModelCard.from_file(cfg.model_dir / CARD_FILE).input_size
    _log(f"photos from {cfg.shared_data} (12 MP ones generated in memory)")
    photos = load_photos(cfg.shared_data, input_size=size)
    inputs = np.stack(
        [prepare(p.data, max_pixels=MAX_PIXELS, size=size) for p in photos.small[:16]]
    )
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="penguin-bench-") as scratch:
        result["model"] = measure_models(cfg, inputs, Path(scratch))
    _log(f"decode: {size} px (the model's input) vs 12 MP, with and without draft")
    result["decode"] = measure_decode(
        {"input_size": photos.tiny, "12MP": photos.large[0]}, cfg.seconds / 16, size
    )
    result.update(measure_servers(cfg, photos, size))
    card = find_variants(cfg.model_dir).card
    result["meta"] = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1),
        "phase_seconds": cfg.seconds,
        "rounds": ROUNDS,
        "cpus": available_cpus(),
        # Others' load on the machine, 1/5/15-minute averages: high values mean rerun.
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "commit": _git_commit(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "model": {
            **{k: card.get(k) for k in ("name", "version", "quantization", "sha256")},
            "input_size": size,
        },
        "photos": photos.describe(),
    }
    result["targets"] = rep.check_targets(result)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(result, indent=2) + "\n")
    print(rep.table(result))
    print(f"\nwritten to {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
