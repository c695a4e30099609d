"""`make loadtest`: run Locust headless with a named shape, then write the report.

    python -m loadtests.run [--host URL] --users 10 --duration 60s --shape steady \\
        [--images DIR] --out reports/loadtest

Without --host the service is started here on a free 127.0.0.1 port (Gunicorn with
gunicorn.conf.py, as in production), measured, and stopped: `make loadtest` alone measures
this checkout. With --host (a local server you run, or a Cloud Run URL) only that URL gets
traffic. OUT gets requests.jsonl (one row a request), summary.json, the PNG charts, Locust's
own HTML report and, for a local run, server.log.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from loadtests import launch, report, shapes

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


def locust_command(args: argparse.Namespace, host: str) -> list[str]:
    """The headless Locust invocation for these options."""
    out: Path = args.out
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "--users",
        str(args.users),
        "--run-time",
        args.duration,
        "--shape",
        args.shape,
        "--user-rps",
        str(args.user_rps),
        "--idle-gap",
        str(args.idle_gap),
        "--burst",
        str(args.burst),
        "--record",
        str(out / "requests.jsonl"),
        "--html",
        str(out / "locust.html"),
        "--only-summary",
        "--stop-timeout",
        "30",
    ]
    if args.images:
        cmd += ["--images", str(args.images)]
    return cmd + list(args.locust_args)


def run(args: argparse.Namespace) -> int:
    """Start a server if needed, run Locust, stop the server, write the report."""
    args.out.mkdir(parents=True, exist_ok=True)
    server = None
    host = args.host
    if not host:
        port = launch.free_port()
        env = {"WEB_CONCURRENCY": str(args.workers)} if args.workers else {}
        server = launch.start_gunicorn(port, args.out / "server.log", env)
        host = f"http://127.0.0.1:{port}"
        print(f"loadtest: started the service at {host} (log: {args.out / 'server.log'})")
        try:
            launch.wait_until(lambda: launch.is_ready(host), server, args.ready_timeout, "ready")
        except (RuntimeError, TimeoutError) as exc:
            launch.stop(server)
            print(f"loadtest: {exc}; see {args.out / 'server.log'}", file=sys.stderr)
            return 2
    try:
        print(f"loadtest: shape {args.shape}, {args.users} base users, {args.duration} -> {host}")
        rc = subprocess.call(locust_command(args, host))
    finally:
        if server is not None:
            launch.stop(server)
    rows = args.out / "requests.jsonl"
    if not rows.is_file():
        print("loadtest: Locust recorded nothing", file=sys.stderr)
        return rc or 1
    summary = report.write_report(rows, args.out)
    print(report.format_summary(summary))
    print(f"loadtest: report in {args.out}/ (summary.json, {', '.join(summary.get('charts', []))})")
    return rc


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run a load test and write its report.")
    parser.add_argument("--host", default="", help="base URL; empty: start a local server")
    parser.add_argument("--users", type=int, default=10, help="base users (0.5 req/s each)")
    parser.add_argument("--duration", default="60s", help="run time, e.g. 15s, 10m, 1h")
    parser.add_argument("--shape", default="steady", choices=sorted(shapes.SHAPES))
    parser.add_argument("--images", default="", help="photo folder (default: generated JPEGs)")
    parser.add_argument("--out", type=Path, default=Path("reports/loadtest"))
    parser.add_argument("--user-rps", type=float, default=0.5, help="uploads per second per user")
    parser.add_argument("--idle-gap", type=float, default=shapes.DEFAULT_IDLE_GAP_S)
    parser.add_argument("--burst", type=float, default=shapes.DEFAULT_BURST_S)
    parser.add_argument("--workers", type=int, default=0, help="local server: Gunicorn workers")
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("locust_args", nargs="*", help="more Locust options, after --")
    args = parser.parse_args(argv)
    if args.host and not args.host.startswith(("http://", "https://")):
        parser.error(f"--host must be a URL such as https://...run.app, not {args.host!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
