"""The `penguin-api` command: serve | predict | evaluate | train | learning-curve.

Each subcommand lives in the module that owns its concern; this file only wires
them into one argument parser. Heavy imports (torch, gunicorn) happen inside the
subcommand, so `penguin-api predict` never loads the training stack.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module that implements it, one-line help)
_COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("penguin_api.serve", "run the API under Gunicorn with the project's settings"),
    "predict": ("penguin_api.predict", "classify photos locally, one JSON line per photo"),
    "evaluate": ("penguin_api.training.evaluate", "score a model on a folder-per-species tree"),
    "train": ("penguin_api.training.train", "build the model from labelled photos"),
    "learning-curve": (
        "penguin_api.training.curve",
        "cross-validated top-1 against the number of training photos",
    ),
}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand; returns the exit code."""
    parser = argparse.ArgumentParser(prog="penguin-api", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in _COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
        # Argument definitions are cheap; each module keeps its imports of heavy
        # libraries inside run().
        importlib.import_module(module_name).add_arguments(sub_parser)
    args = parser.parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
