"""Run a command as on the runtime install (`pip install .`, no extras) inside the dev venv.

The dev venv holds every extra; building a second venv per test run would cost minutes.
Instead a `sitecustomize` on PYTHONPATH makes every module that only the extras (or other
installed tools) bring unimportable, in the process and in the worker processes it spawns,
exactly as if those distributions were not installed.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

_SITECUSTOMIZE = '''\
import sys

_BLOCKED = {blocked!r}


class _NotInstalled:
    """Modules of distributions the runtime install does not have."""

    def find_spec(self, name, path=None, target=None):
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            if ".".join(parts[:depth]) in _BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
'''


def _name(dist: metadata.Distribution) -> str:
    return dist.metadata["Name"].lower().replace("_", "-")


def runtime_distributions(project: str = "penguin-api") -> set[str]:
    """The project and everything its plain install pulls in, recursively (no extras)."""
    wanted, seen = [project], set()
    while wanted:
        name = wanted.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                wanted.append(req.name)
    return seen


def _modules(dist: metadata.Distribution) -> set[str]:
    """Dotted package paths a distribution installs, down to three levels."""
    found = set()
    for file in dist.files or []:
        parts = file.parts
        if len(parts) < 2 or parts[0].endswith((".dist-info", ".data")) or ".." in parts:
            if len(parts) == 1 and file.suffix == ".py":
                found.add(file.stem)
            continue
        for depth in range(1, min(3, len(parts) - 1) + 1):
            found.add(".".join(parts[:depth]))
    return found


def blocked_modules() -> set[str]:
    """The shortest module paths no runtime distribution provides but another one does."""
    runtime = runtime_distributions()
    dists = list(metadata.distributions())
    allowed = set().union(*(_modules(d) for d in dists if _name(d) in runtime))
    blocked = set()
    for dist in dists:
        if _name(dist) in runtime or _name(dist) in ("pip", "setuptools", "wheel"):
            continue
        for module in _modules(dist):
            parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
            if module not in allowed and not any(p in blocked for p in parents):
                blocked.add(module)
    return {m for m in blocked if not any(m.startswith(b + ".") for b in blocked)}


def runtime_only_path(folder: Path) -> Path:
    """Write the sitecustomize into `folder`; put `folder` first on PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        _SITECUSTOMIZE.format(blocked=sorted(blocked_modules()))
    )
    return folder
