"""HTTP load for the benchmark: closed-loop clients and an open-loop fixed-rate run.

Kept deliberately thin (plain sockets, bodies encoded once up front) so that the client's
own CPU, which shares the cores with the server, stays a small part of each request.
"""

from __future__ import annotations

import random
import socket
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

    def record(self, status: int, latency_ms: float, timing: str | None) -> None:
        """Count one answer: a failure by its status, or a completion with its latency."""
        if status != 200:
            self.fail(status)
            return
        self.count += 1
        self.latencies_ms.append(latency_ms)
        if timing:
            self.server_timing.append(timing)

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
    """POSTs uploads to one server over plain sockets, one connection per request.

    Each request is encoded once and sent as is, with ``Connection: close`` (the
    service closes each connection after its answer anyway), and the answer is read to
    the end: the least client CPU per request, since the client shares the cores with
    the server.
    """

    def __init__(self, host: str, port: int, path: str = "/predict", timeout: float = 30.0):
        self.host, self.port, self.path, self.timeout = host, port, path, timeout
        self._encoded: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def _request(self, upload: Upload) -> bytes:
        key = id(upload)
        encoded = self._encoded.get(key)
        if encoded is None:
            head = (
                f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: {upload.content_type}\r\n"
                f"Content-Length: {len(upload.body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            encoded = head + upload.body
            with self._lock:
                self._encoded[key] = encoded
        return encoded

    def post(self, upload: Upload) -> tuple[int, str | None]:
        """Send one upload; returns (status, Server-Timing header). Status 0 = no answer."""
        request = self._request(upload)
        chunks = []
        try:
            with socket.create_connection((self.host, self.port), self.timeout) as sock:
                sock.sendall(request)
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError:
            return 0, None
        return _parse_answer(b"".join(chunks))


def _parse_answer(raw: bytes) -> tuple[int, str | None]:
    """(status, Server-Timing) from a whole HTTP/1.1 answer; (0, None) if it is not one."""
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return 0, None
    timing = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "server-timing":
            timing = value.strip()
    return int(parts[1]), timing


def closed_loop(
    client: Client, uploads: list[Upload], concurrency: int, seconds: float
) -> LoadResult:
    """`concurrency` clients each send, wait for the answer, send again, for `seconds`.

    No request starts after the deadline (unless its client has had no answer yet); the
    ones under way then finish and count, and the window is as long as it really took.
    """
    start = time.monotonic()
    deadline = start + seconds
    result = LoadResult()
    lock = threading.Lock()

    def one_client(offset: int) -> None:
        local = LoadResult()
        i = offset
        while time.monotonic() < deadline or local.count + local.errors == 0:
            t0 = time.perf_counter()
            status, timing = client.post(uploads[i % len(uploads)])
            t1 = time.perf_counter()
            i += 1
            local.record(status, (t1 - t0) * 1000, timing)
        with lock:
            result.add(local)

    threads = [
        threading.Thread(target=one_client, args=(k * 5,), daemon=True) for k in range(concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.monotonic() - start
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
            result.record(status, (end - due) * 1000, timing)

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
