"""HTTP load for the benchmark: closed-loop clients and an open-loop fixed-rate run.

Kept deliberately thin (http.client, bodies encoded once up front) so that the client's
own CPU, which shares the cores with the server, stays a small part of each request.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Upload:
    """A ready-to-send multipart/form-data body with the photo in field `file`."""

    body: bytes
    content_type: str


def multipart(data: bytes, filename: str = "photo.jpg", mime: str = "image/jpeg") -> Upload:
    """Encode `data` as the body of a one-file form upload (field `file`)."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {mime}\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    return Upload(body=body, content_type=f"multipart/form-data; boundary={boundary}")


@dataclass
class LoadResult:
    """What one load window produced: completions, latencies, failures, timing headers."""

    seconds: float = 0.0
    count: int = 0
    errors: int = 0
    #: Failed answers by HTTP status ("0": no answer at all).
    error_statuses: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    server_timing: list[str] = field(default_factory=list)
    late_ms: list[float] = field(default_factory=list)
    #: CPU the server's processes and this client process used during the window.
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def throughput(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def fail(self, status: int) -> None:
        self.errors += 1
        self.error_statuses[str(status)] = self.error_statuses.get(str(status), 0) + 1

    def add(self, other: LoadResult) -> None:
        self.seconds += other.seconds
        self.count += other.count
        self.errors += other.errors
        for status, n in other.error_statuses.items():
            self.error_statuses[status] = self.error_statuses.get(status, 0) + n
        self.latencies_ms += other.latencies_ms
        self.server_timing += other.server_timing
        self.late_ms += other.late_ms
        self.server_cpu_s += other.server_cpu_s
        self.client_cpu_s += other.client_cpu_s


class Client:
    """POSTs uploads to one server; one keep-alive connection per thread where allowed."""

    def __init__(self, host: str, port: int, path: str = "/predict", timeout: float = 30.0):
        self.host, self.port, self.path, self.timeout = host, port, path, timeout
        self._local = threading.local()

    def post(self, upload: Upload) -> tuple[int, str | None]:
        """Send one upload; returns (status, Server-Timing header). Status 0 = no answer."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        try:
            conn.request(
                "POST",
                self.path,
                body=upload.body,
                headers={"Content-Type": upload.content_type},
            )
            resp = conn.getresponse()
            resp.read()
            if resp.will_close:  # Gunicorn's sync workers close after every answer
                conn.close()
            return resp.status, resp.getheader("Server-Timing")
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            return 0, None


def closed_loop(
    client: Client, uploads: list[Upload], concurrency: int, seconds: float
) -> LoadResult:
    """`concurrency` clients each send, wait for the answer, send again, for `seconds`.

    Only answers that arrive inside the window count, as in the floor's measurement.
    """
    deadline = time.monotonic() + seconds
    result = LoadResult(seconds=seconds)
    lock = threading.Lock()

    def one_client(offset: int) -> None:
        local = LoadResult()
        i = offset
        while True:
            t0 = time.perf_counter()
            status, timing = client.post(uploads[i % len(uploads)])
            t1 = time.perf_counter()
            if time.monotonic() > deadline:
                break
            i += 1
            if status != 200:
                local.fail(status)
                continue
            local.count += 1
            local.latencies_ms.append((t1 - t0) * 1000)
            if timing:
                local.server_timing.append(timing)
        with lock:
            result.add(local)

    threads = [
        threading.Thread(target=one_client, args=(k * 5,), daemon=True) for k in range(concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result


def open_loop(
    client: Client, uploads: list[Upload], rate: float, seconds: float, seed: int = 5
) -> LoadResult:
    """Requests arrive at `rate` per second (Poisson arrivals), whether or not earlier ones
    have finished; latency counts from the scheduled send, so queueing is not hidden."""
    rng = random.Random(seed)
    schedule, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            break
        schedule.append(t)
    result = LoadResult(seconds=seconds)
    lock = threading.Lock()

    def one(k: int, due: float) -> None:
        start = time.perf_counter()
        status, timing = client.post(uploads[k % len(uploads)])
        end = time.perf_counter()
        with lock:
            result.late_ms.append((start - due) * 1000)
            if status != 200:
                result.fail(status)
                return
            result.count += 1
            result.latencies_ms.append((end - due) * 1000)
            if timing:
                result.server_timing.append(timing)

    origin = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for k, offset in enumerate(schedule):
            delay = origin + offset - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, k, origin + offset)
    return result


def warm_up(client: Client, uploads: list[Upload], requests: int) -> int:
    """Send `requests` uploads in parallel (every worker's first request); returns failures."""
    with ThreadPoolExecutor(max_workers=max(1, requests)) as pool:
        statuses = list(
            pool.map(lambda k: client.post(uploads[k % len(uploads)])[0], range(requests))
        )
    return sum(s != 200 for s in statuses)
