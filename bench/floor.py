"""The floor: decode + preprocess + one ONNX Runtime run per photo, in-process, no HTTP.

One process per core, one intra-op thread each: the most a box of these cores can do with
this model and this preprocessing. The service's throughput is judged against it. Also
here: the model alone (no decode) on one core, per model variant.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from penguin_api.config import Settings
from penguin_api.imaging import prepare

#: The pixel limit the service applies by default (a 12 MP photo is well inside it).
MAX_PIXELS = Settings().max_image_pixels


def single_thread_session(model_path: str) -> ort.InferenceSession:
    """An ONNX Runtime session pinned to one thread, as each service worker runs it."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])


# --- per-process state of the floor pool (set by _init in each child) -----------------
_session: ort.InferenceSession | None = None
_photos: tuple[bytes, ...] = ()
_input_name = "image"
_input_size = 0


def _init(model_path: str, photos: tuple[bytes, ...], input_size: int) -> None:
    global _session, _photos, _input_name, _input_size
    _session = single_thread_session(model_path)
    _input_name = _session.get_inputs()[0].name
    _input_size = input_size
    _photos = photos
    _classify(_photos[0])  # first run allocates; keep it out of the measurement


def _classify(data: bytes) -> None:
    assert _session is not None
    batch = prepare(data, max_pixels=MAX_PIXELS, size=_input_size)[None]
    _session.run(None, {_input_name: batch})


def _run_for(args: tuple[int, float]) -> tuple[int, list[float], int, float, float]:
    """Classify photos from offset `start` until `deadline` (the one under way finishes).

    Returns (count, latencies ms, RSS bytes, CPU seconds used, monotonic end time).
    """
    start, deadline = args
    done, latencies, i = 0, [], start
    cpu0 = time.process_time()
    while time.monotonic() < deadline or done == 0:
        t0 = time.perf_counter()
        _classify(_photos[i % len(_photos)])
        latencies.append((time.perf_counter() - t0) * 1000)
        done += 1
        i += 1
    return done, latencies, _rss_bytes(os.getpid()), time.process_time() - cpu0, time.monotonic()


def _paced(args: tuple[float, float, int]) -> tuple[list[float], list[float]]:
    """Classify photos arriving at `rate`/s (Poisson, as the HTTP open loop) for `seconds`.

    Returns (latency ms from each arrival, so a photo that waits behind another counts it;
    CPU ms each photo took: the work's own spread, whatever the machine is doing).
    """
    rate, seconds, seed = args
    rng = random.Random(seed)
    latencies, cpu, due, i = [], [], 0.0, 0
    origin = time.perf_counter()
    while True:
        due += rng.expovariate(rate)
        if due >= seconds:
            return latencies, cpu
        delay = origin + due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        c0 = time.thread_time()
        _classify(_photos[i % len(_photos)])
        cpu.append((time.thread_time() - c0) * 1000)
        latencies.append((time.perf_counter() - origin - due) * 1000)
        i += 1


@dataclass
class FloorResult:
    """Completions, per-photo latencies and process RSS over all measured windows."""

    seconds: float = 0.0
    count: int = 0
    latencies_ms: list[float] | None = None
    rss_bytes: list[int] | None = None
    cpu_seconds: float = 0.0

    @property
    def throughput(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


class Floor:
    """A pool of `processes` single-threaded classifiers, started once, measured in windows.

    `input_size` is the side of the model's input, from its card, as the service reads it.
    """

    def __init__(
        self, model_path: str, photos: tuple[bytes, ...], processes: int, input_size: int
    ) -> None:
        self.processes = processes
        # spawn: each child builds its own ORT session in a clean process (no forked pools).
        ctx = mp.get_context("spawn")
        self._pool = ctx.Pool(
            processes, initializer=_init, initargs=(model_path, photos, input_size)
        )
        self.result = FloorResult(latencies_ms=[], rss_bytes=[])
        # Touch every child so start-up is not billed to the first window.
        self._pool.map(
            _run_for, [(i, 0.0) for i in range(processes)], chunksize=1
        )  # one photo each

    def measure(self, seconds: float) -> float:
        """Run every process flat out for `seconds`; returns this window's photos/s."""
        start = time.monotonic()
        offsets = [i * 7 for i in range(self.processes)]
        parts = self._pool.map(_run_for, [(o, start + seconds) for o in offsets], chunksize=1)
        count = sum(p[0] for p in parts)
        elapsed = max(p[4] for p in parts) - start
        self.result.seconds += elapsed
        self.result.count += count
        self.result.cpu_seconds += sum(p[3] for p in parts)
        for _, lat, rss, _, _ in parts:
            self.result.latencies_ms.extend(lat)
            self.result.rss_bytes.append(rss)
        return count / elapsed

    def paced_async(self, rate: float, seconds: float, seed: int):
        """Start `_paced` in one pool process; `.get()` on the result gives its latencies."""
        return self._pool.apply_async(_paced, ((rate, seconds, seed),))

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()


def model_latency(paths: dict[str, str], inputs: np.ndarray, seconds: float) -> dict[str, dict]:
    """Per-image latency of each model alone (batch of 1, one thread), cycling `inputs`.

    The models take turns in short bursts rather than one after the other, so that load
    from elsewhere on the machine weighs on each of them alike. Both wall-clock time and
    the thread's CPU time are kept: with one intra-op thread ONNX Runtime computes in the
    calling thread, so CPU time is the latency on a core of one's own, which a shared
    machine's wall clock (time spent preempted included) only approximates.
    """
    sessions = {tag: single_thread_session(path) for tag, path in paths.items()}
    names = {tag: s.get_inputs()[0].name for tag, s in sessions.items()}
    for tag, session in sessions.items():  # warm-up: first runs allocate and pick kernels
        for k in range(min(3, len(inputs))):
            session.run(None, {names[tag]: inputs[k : k + 1]})
    latencies: dict[str, list[float]] = {tag: [] for tag in sessions}
    cpu: dict[str, list[float]] = {tag: [] for tag in sessions}
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline or min(len(v) for v in latencies.values()) < 5:
        for tag, session in sessions.items():
            for _ in range(5):
                x = inputs[i % len(inputs)][None]
                t0, c0 = time.perf_counter(), time.thread_time()
                session.run(None, {names[tag]: x})
                cpu[tag].append((time.thread_time() - c0) * 1000)
                latencies[tag].append((time.perf_counter() - t0) * 1000)
                i += 1
    out = {}
    for tag, samples in latencies.items():
        arr = np.asarray(samples)
        out[tag] = {
            "file": paths[tag],
            "runs": len(samples),
            "mean_ms": round(float(arr.mean()), 2),
            "p50_ms": round(float(np.percentile(arr, 50)), 2),
            "p10_ms": round(float(np.percentile(arr, 10)), 2),
            "cpu_p50_ms": round(float(np.median(cpu[tag])), 2),
            "file_mb": round(os.path.getsize(paths[tag]) / 1e6, 2),
        }
    return out


def _rss_bytes(pid: int) -> int:
    """Resident set size of `pid` from /proc (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0
