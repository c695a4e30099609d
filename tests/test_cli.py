"""The `penguin-api` command line: every subcommand listed, each one's module imported only
when it runs, and the training commands naming the install they need when it is missing.

Run as a user runs it (the console script, in a subprocess). A missing training install is
simulated by hiding its packages from the child interpreter; the real thing, a wheel
installed without extras, is tests/test_install_from_wheel.py.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from penguin_api.cli import _COMMANDS, TRAIN_INSTALL, TRAIN_MODULES
from tests.server import REPO_ROOT, clean_env

TRAINING_COMMANDS = [name for name, spec in _COMMANDS.items() if spec.needs]
#: What must stay out of a process that serves or predicts.
TRAINING_ONLY = (*TRAIN_MODULES, "penguin_api.training")


def _penguin_api() -> list[str]:
    """The installed console script beside this interpreter, else the module."""
    script = shutil.which("penguin-api", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "penguin_api.cli"]


def run_cli(*args: str, hide: tuple[str, ...] = (), tmp_path: Path | None = None):
    """`penguin-api args...` in a subprocess; `hide` makes those packages unimportable in it."""
    env = clean_env()
    if hide:
        assert tmp_path is not None
        # As if not installed: a None entry in sys.modules makes find_spec answer None and
        # `import` raise ModuleNotFoundError, exactly as for a package that is not there.
        (tmp_path / "sitecustomize.py").write_text(
            f"import sys\nfor _name in {list(hide)!r}:\n    sys.modules[_name] = None\n"
        )
        env["PYTHONPATH"] = str(tmp_path)
    return subprocess.run(
        [*_penguin_api(), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_lists_every_subcommand_with_what_it_does():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for name, spec in _COMMANDS.items():
        assert name in result.stdout
        assert spec.help in " ".join(result.stdout.split())  # argparse may wrap the line


def test_help_works_without_the_training_install(tmp_path):
    result = run_cli("--help", hide=TRAIN_MODULES, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in _COMMANDS)


@pytest.mark.parametrize(
    "args",
    [
        *[(name,) for name in TRAINING_COMMANDS],
        ("train", "--help"),
        ("evaluate", "--data", "photos", "--out", "reports/x"),
    ],
    ids=lambda args: " ".join(args),
)
def test_training_commands_without_the_train_install_exit_2_naming_it(tmp_path, args):
    result = run_cli(*args, hide=TRAIN_MODULES, tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert lines[0].startswith(f"penguin-api {args[0]}:")
    assert TRAIN_INSTALL in lines[0]
    assert all(module in lines[0] for module in TRAIN_MODULES)


def test_the_line_names_only_what_is_missing(tmp_path):
    result = run_cli("learning-curve", hide=("matplotlib",), tmp_path=tmp_path)
    assert result.returncode == 2
    assert "matplotlib" in result.stderr and "torch" not in result.stderr
    assert TRAIN_INSTALL in result.stderr


def test_training_commands_with_the_train_install_take_their_own_options():
    missing = [m for m in TRAIN_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the train extra is not installed here ({', '.join(missing)})")
    for name in TRAINING_COMMANDS:
        result = run_cli(name, "--help")
        assert result.returncode == 0, result.stderr
        assert "--data" in result.stdout, name  # the subcommand's module added its options


def test_predict_runs_without_importing_the_training_stack(model_dir, tmp_path, small_jpeg):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(small_jpeg)
    # In one interpreter, after the command has run: what did it import?
    probe = (
        "import json, sys\n"
        "from penguin_api import cli\n"
        f"code = cli.main(['predict', {str(photo)!r}, '--model-dir', {str(model_dir)!r}])\n"
        f"loaded = [m for m in {list(TRAINING_ONLY)!r} if m in sys.modules]\n"
        "print(json.dumps({'code': code, 'loaded': loaded}), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(result.stderr.splitlines()[-1])
    assert report == {"code": 0, "loaded": []}, result.stderr
    assert json.loads(result.stdout)["file"] == str(photo)


@pytest.mark.parametrize("command", ["serve", "predict"])
def test_serving_commands_parse_without_the_training_install(tmp_path, command):
    result = run_cli(command, "--help", hide=TRAINING_ONLY, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--model-dir" in result.stdout
