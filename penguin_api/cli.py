"""The `penguin-api` command: serve | predict | merge | evaluate | train | learning-curve.

Each subcommand lives in the module that owns its concern; this file only wires
them into one argument parser. Only the chosen subcommand's module is imported, so
`penguin-api serve` and `predict` run on the runtime install alone, and the
training commands say which install brings them instead of failing on an import.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from dataclasses import dataclass

#: What `pip install -e '.[train]'` brings that the training commands import.
TRAIN_MODULES = ("torch", "efficientnet_lite_pytorch", "onnx", "matplotlib", "threadpoolctl")
TRAIN_INSTALL = "pip install -e '.[train]'"


@dataclass(frozen=True)
class _Command:
    module: str
    help: str
    needs: tuple[str, ...] = ()


_COMMANDS: dict[str, _Command] = {
    "serve": _Command(
        "penguin_api.serve", "run the API under Gunicorn with the project's settings"
    ),
    "predict": _Command(
        "penguin_api.predict", "classify photos, folders or a gs:// bucket; resumable results"
    ),
    "merge": _Command(
        "penguin_api.batch.merge", "join the parts a Cloud Run Job's predict tasks wrote"
    ),
    "evaluate": _Command(
        "penguin_api.training.evaluate",
        "score a model on a folder-per-species tree",
        TRAIN_MODULES,
    ),
    "train": _Command(
        "penguin_api.training.train", "build the model from labelled photos", TRAIN_MODULES
    ),
    "learning-curve": _Command(
        "penguin_api.training.curve",
        "cross-validated top-1 against the number of training photos",
        TRAIN_MODULES,
    ),
}


def _chosen(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is one), if any."""
    return next((word for word in argv if word in _COMMANDS), None)


def _missing(modules: tuple[str, ...]) -> list[str]:
    """Those of ``modules`` that this Python cannot import (looked up, not imported)."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="penguin-api", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    name = _chosen(argv)
    for command, spec in _COMMANDS.items():
        sub_parser = sub.add_parser(command, help=spec.help, description=spec.help)
        if command != name:
            continue
        missing = _missing(spec.needs)
        if missing:
            print(
                f"penguin-api {command}: needs the training install ({', '.join(missing)} "
                f"missing): {TRAIN_INSTALL}",
                file=sys.stderr,
            )
            return 2
        importlib.import_module(spec.module).add_arguments(sub_parser)
    args = parser.parse_args(argv)
    return int(importlib.import_module(_COMMANDS[args.command].module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
