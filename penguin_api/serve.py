"""`penguin-api serve`: run the API under Gunicorn with the project's Gunicorn settings.

The settings are the module penguin_api.gunicorn_config, so they are found wherever the
package is installed (a wheel has no gunicorn.conf.py beside it). The process is replaced
by Gunicorn (exec), so signals from a container runtime or Cloud Run reach the master.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

#: The settings module, in Gunicorn's `python:` form (the same settings gunicorn.conf.py shows).
CONFIG = "python:penguin_api.gunicorn_config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options override the matching environment settings for this run."""
    parser.add_argument("--port", type=int, help="port to listen on (default: $PORT or 8080)")
    parser.add_argument("--host", help="address to bind (default: $HOST or 0.0.0.0)")
    parser.add_argument("--workers", type=int, help="worker processes (default: CPU quota)")
    parser.add_argument("--model-dir", type=Path, help="model directory (default: model/)")
    parser.add_argument(
        "--config",
        default=CONFIG,
        help=f"Gunicorn config: a file, or python:MODULE (default: {CONFIG})",
    )


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
    config = str(args.config)
    if not config.startswith("python:") and not Path(config).is_file():
        print(f"penguin-api serve: no Gunicorn config at {config}", file=sys.stderr)
        return 2
    argv = [sys.executable, "-m", "gunicorn", "-c", config, "penguin_api.wsgi:app"]
    os.execve(sys.executable, argv, env)
    return 1  # pragma: no cover - execve does not return
