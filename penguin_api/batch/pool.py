"""Worker processes for the batch tool: one model session each, rows back in input order.

Each worker is a fresh (spawned) process that loads and verifies its own ONNX Runtime
session, then reads, decodes and classifies the photos it is sent, one row per photo.
The parent hands out small chunks, two per worker so none waits for work, and puts the
rows back in input order. A worker that dies (the OOM killer, a decoder crash) is
replaced; the photos it held are sent again, and a photo that kills a worker twice gets
an error row instead of stopping the run. Ctrl-C belongs to the parent: workers ignore it.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from penguin_api.batch import rows as rowfmt

#: Chunks a worker holds at once: one being classified, one waiting in its pipe.
_AHEAD = 2
#: A worker that dies before it is ready this often means the model cannot load here.
_MAX_START_FAILURES = 3


class PoolError(Exception):
    """The workers cannot run (the model does not load, or they keep dying at start)."""


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker needs to build its classifier."""

    model_dir: Path
    threads: int = 1
    top_k: int = 3
    max_pixels: int = 50_000_000


# --- the worker process -------------------------------------------------------------------


def _worker_main(conn: Connection, config: WorkerConfig) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how a Ctrl-C ends
    import numpy as np

    from penguin_api import errors, imaging
    from penguin_api.batch import storage
    from penguin_api.classifier import Classifier, ModelError

    try:
        classifier = Classifier.load(
            config.model_dir, threads=config.threads, top_k=config.top_k, warmup_runs=1
        )
    except ModelError as exc:
        conn.send(("failed", str(exc)))
        return
    size = classifier.input_size
    blank = np.full((1, size, size, 3), 127, dtype=np.uint8)
    # Any answer shows the fields this model's rows have (a CSV header needs them).
    conn.send(("ready", {"file": "", **classifier.predict(blank)[0].as_dict()}))

    def classify(key: str, data: bytes | storage.UnreadablePhoto) -> dict[str, Any]:
        if isinstance(data, storage.UnreadablePhoto):
            return rowfmt.error_row(key, rowfmt.UNREADABLE, str(data))
        try:
            array = imaging.prepare(data, max_pixels=config.max_pixels, size=size)
        except imaging.ImageError as exc:
            return rowfmt.error_row(key, errors.from_image_error(exc).to_problem())
        return {"file": key, **classifier.predict(array[None])[0].as_dict()}

    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if task is None:
            return
        seq, items = task
        try:
            for (index, key), (_, data) in zip(
                items, storage.read_many(k for _, k in items), strict=True
            ):
                conn.send(("row", seq, index, classify(key, data)))
        except (BrokenPipeError, OSError):
            return


# --- the parent's side --------------------------------------------------------------------


@dataclass(eq=False)  # a worker is itself, not its field values
class _Worker:
    process: Any
    conn: Connection
    ready: bool = False
    #: Chunks sent and not yet fully answered, in the order the worker takes them.
    holding: deque[int] = field(default_factory=deque)


@dataclass
class _Chunk:
    keys: list[str]
    rows: list[dict[str, Any] | None]
    #: Indices still to send (all at first; the unanswered ones after a worker died).
    todo: list[int]

    @classmethod
    def of(cls, keys: list[str]) -> _Chunk:
        return cls(keys, [None] * len(keys), list(range(len(keys))))

    @property
    def complete(self) -> bool:
        return all(r is not None for r in self.rows)


class Pool:
    """`processes` workers; `classify(keys)` yields each chunk's rows, in input order."""

    def __init__(self, processes: int, config: WorkerConfig, chunk_size: int = 8) -> None:
        self._ctx = mp.get_context("spawn")  # ONNX Runtime does not survive a fork
        self._config = config
        self._chunk_size = chunk_size
        self._workers: list[_Worker] = []
        self._start_failures = 0
        #: Photos that were being read when a worker died, and how often that happened.
        self._deaths: dict[str, int] = {}
        self.answer_template: dict[str, Any] | None = None
        try:
            for _ in range(processes):
                self._workers.append(self._start())
            self._wait_ready()
        except BaseException:
            self.terminate()
            raise

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_worker_main, args=(child, self._config), daemon=True, name="penguin-worker"
        )
        process.start()
        child.close()  # the worker holds the only other end: its death reads as EOF here
        return _Worker(process, parent)

    def _wait_ready(self) -> None:
        while not all(w.ready for w in self._workers):
            self._poll(None, {})

    def classify(self, keys: list[str]) -> Iterator[list[dict[str, Any]]]:
        """Rows for `keys`, a chunk at a time, in order; KeyboardInterrupt passes through."""
        size = self._chunk_size
        chunks = {
            seq: _Chunk.of(keys[start : start + size])
            for seq, start in enumerate(range(0, len(keys), size))
        }
        queue: deque[int] = deque(sorted(chunks))
        next_out, count = 0, len(chunks)
        while next_out < count:
            self._hand_out(queue, chunks)
            self._poll(queue, chunks)
            while next_out in chunks and chunks[next_out].complete:
                yield [r for r in chunks.pop(next_out).rows if r is not None]
                next_out += 1

    def _hand_out(self, queue: deque[int], chunks: dict[int, _Chunk]) -> None:
        for worker in self._workers:
            while worker.ready and queue and len(worker.holding) < _AHEAD:
                seq = queue.popleft()
                chunk = chunks[seq]
                items = [(i, chunk.keys[i]) for i in chunk.todo]
                try:
                    worker.conn.send((seq, items))
                except OSError:  # it just died: the next poll replaces it
                    queue.appendleft(seq)
                    break
                chunk.todo = []
                worker.holding.append(seq)

    def _poll(self, queue: deque[int] | None, chunks: dict[int, _Chunk]) -> None:
        """Wait for any message or death, and take in everything that is there."""
        sentinels = {w.process.sentinel: w for w in self._workers}
        conns = {w.conn: w for w in self._workers}
        for ready in wait([*conns, *sentinels]):
            worker = conns.get(ready) or sentinels.get(ready)
            if worker is None or worker not in self._workers:
                continue
            try:
                while worker.conn.poll():
                    self._take(worker, worker.conn.recv(), chunks)
            except (EOFError, OSError):
                pass
            if not worker.process.is_alive():
                worker.process.join()
                self._replace(worker, queue, chunks)

    def _take(self, worker: _Worker, message: tuple, chunks: dict[int, _Chunk]) -> None:
        kind = message[0]
        if kind == "ready":
            worker.ready = True
            self.answer_template = self.answer_template or message[1]
        elif kind == "failed":
            raise PoolError(message[1])
        elif kind == "row":
            _, seq, index, row = message
            chunk = chunks[seq]
            chunk.rows[index] = row
            if chunk.complete and seq in worker.holding:
                worker.holding.remove(seq)

    def _replace(self, dead: _Worker, queue: deque[int] | None, chunks: dict[int, _Chunk]) -> None:
        """Start a worker in place of `dead`; what it held goes to the front of the queue."""
        code = dead.process.exitcode
        if queue is None or not dead.ready:
            self._start_failures += 1
            if queue is None or self._start_failures >= _MAX_START_FAILURES:
                raise PoolError(f"a worker process died while loading the model (exit {code})")
        resend = []
        for position, seq in enumerate(dead.holding):
            chunk = chunks[seq]
            missing = [i for i, r in enumerate(chunk.rows) if r is None]
            if position == 0 and missing:
                # Its first unanswered photo is the one it was working on when it died.
                key = chunk.keys[missing[0]]
                self._deaths[key] = self._deaths.get(key, 0) + 1
                if self._deaths[key] >= 2:
                    detail = f"The worker reading it died twice (exit {code}); it was skipped."
                    chunk.rows[missing[0]] = rowfmt.error_row(key, rowfmt.WORKER_CRASHED, detail)
                    missing = missing[1:]
            chunk.todo = missing
            if missing:
                resend.append(seq)
        queue.extendleft(reversed(resend))
        self._workers[self._workers.index(dead)] = self._start()
        dead.conn.close()

    def close(self) -> None:
        """Tell the workers to finish and wait for them."""
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in self._workers:
            worker.process.join(timeout=10)
        self.terminate()

    def terminate(self) -> None:
        """Stop the workers now (Ctrl-C): whatever they are doing is dropped."""
        for worker in self._workers:
            if worker.process.is_alive():
                worker.process.terminate()
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers = []
