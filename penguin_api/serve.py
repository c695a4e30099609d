"""`penguin-api serve`: run the API under Gunicorn with the project's gunicorn.conf.py.

The process is replaced by Gunicorn (exec), so signals from a container runtime or
Cloud Run reach the Gunicorn master directly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

#: gunicorn.conf.py at the repository root (next to the package).
CONFIG = Path(__file__).resolve().parents[1] / "gunicorn.conf.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options override the matching environment settings for this run."""
    parser.add_argument("--port", type=int, help="port to listen on (default: $PORT or 8080)")
    parser.add_argument("--host", help="address to bind (default: $HOST or 0.0.0.0)")
    parser.add_argument("--workers", type=int, help="worker processes (default: CPU quota)")
    parser.add_argument("--model-dir", type=Path, help="model directory (default: model/)")
    parser.add_argument("--config", type=Path, default=CONFIG, help="Gunicorn config file")


def run(args: argparse.Namespace) -> int:
    """Exec Gunicorn; returns only if it cannot be started."""
    overrides = {
        "PORT": args.port,
        "HOST": args.host,
        "WEB_CONCURRENCY": args.workers,
        "MODEL_DIR": args.model_dir.resolve() if args.model_dir else None,
    }
    env = dict(os.environ)
    env.update({key: str(value) for key, value in overrides.items() if value is not None})
    if not args.config.is_file():
        print(f"penguin-api serve: no Gunicorn config at {args.config}", file=sys.stderr)
        return 2
    argv = [sys.executable, "-m", "gunicorn", "-c", str(args.config), "penguin_api.wsgi:app"]
    os.execve(sys.executable, argv, env)
    return 1  # pragma: no cover - execve does not return
