"""How many idle connections the service holds before a normal upload has to wait.

Starts the service as `make run` does (2 workers, default settings), opens N connections
that send nothing, then times one normal POST /predict, for each N given. Each worker
holds up to `worker_connections` (1,000) connections; past both workers' share, new ones
wait in the listen backlog until idle ones are closed at READ_TIMEOUT, and so does the
upload. Prints one JSON object; nothing is written to the repository.

Run: `.venv/bin/python scripts/connection_flood.py [--photo P] [N ...]` (default N:
500 1500 1900 2100 2500). Needs an open-files limit above the largest N.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.server import running_server  # noqa: E402
from tests.slow_clients import sockets_held  # noqa: E402


def _open(port: int, count: int) -> list[socket.socket]:
    """Up to `count` idle connections; stops at the first the server no longer takes in."""
    socks = []
    for _ in range(count):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:  # backlog full: the kernel drops the handshake
            break
    return socks


def flood(photo: bytes, count: int) -> dict:
    """One server, `count` idle connections, one timed upload."""
    with running_server(workers=2) as srv:
        workers = srv.worker_pids()
        started = time.monotonic()
        idle = _open(srv.port, count)
        opened_s = time.monotonic() - started
        try:
            deadline = time.monotonic() + 10
            held = sockets_held(workers) - len(workers)
            while held < min(count, 2000) and time.monotonic() < deadline:
                time.sleep(0.2)
                held = sockets_held(workers) - len(workers)
            sent = time.monotonic()
            response = requests.post(
                srv.url("/predict"), files={"file": ("p.jpg", photo, "image/jpeg")}, timeout=120
            )
            waited = time.monotonic() - sent
        finally:
            for sock in idle:
                sock.close()
    return {
        "idle_connections_tried": count,
        "idle_connections_opened": len(idle),
        "held_by_workers": held,
        "opened_in_s": round(opened_s, 2),
        "upload_status": response.status_code,
        "upload_answered_in_s": round(waited, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_photo = next((REPO.parent / "shared" / "data" / "penguins" / "val").glob("*/*.jpg"))
    parser.add_argument("--photo", type=Path, default=default_photo)
    parser.add_argument("counts", type=int, nargs="*", default=[500, 1500, 1900, 2100, 2500])
    args = parser.parse_args()
    photo = args.photo.read_bytes()
    runs = []
    for count in args.counts:
        runs.append(flood(photo, count))
        print(json.dumps(runs[-1]), file=sys.stderr)
    print(json.dumps({"runs": runs}, indent=2))


if __name__ == "__main__":
    main()
