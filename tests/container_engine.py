"""Drive docker or podman for the container tests: find an engine, build, run, inspect.

The engine is $CONTAINER when set, else docker when its daemon answers, else podman. A
machine that cannot reach Docker Hub prepares podman and a local python:3.11-slim with
../shared/tools/container-env.sh; it is run here when podman is not set up yet, and the
variables it exports (storage config, LOCAL_BASE_IMAGE) go to every engine call.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.server import free_port, tcp_port_state

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_SCRIPT = REPO_ROOT.parent / "shared" / "tools" / "container-env.sh"
DEFAULT_BASE_IMAGE = "python:3.11-slim"
CONTAINER_PORT = 8080  # what the image listens on ($PORT's default)

#: Folders never worth copying into a build context snapshot (.dockerignore drops the rest).
_NOT_CONTEXT = (
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".cache",
    "reports",
    "out",
    "node_modules",
    "*.egg-info",
    "tests",
    "loadtests",
)


class NoEngineError(RuntimeError):
    """Neither docker nor podman can build and run images here."""


@dataclass
class Engine:
    """A container engine CLI and the environment its calls need."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    base_image: str = DEFAULT_BASE_IMAGE

    def run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess:
        """`<engine> args...`, output captured as text."""
        proc = subprocess.run(
            [self.name, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{self.name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        return proc

    def build(self, context: Path, tag: str, timeout: float = 900) -> Build:
        """Build `context` as `tag` from the chosen base; time it and keep the output."""
        args = [
            "build",
            "--network",
            "host",
            "--build-arg",
            f"BASE_IMAGE={self.base_image}",
            "-t",
            tag,
            str(context),
        ]
        env = dict(self.env, DOCKER_BUILDKIT="1", BUILDKIT_PROGRESS="plain")
        start = time.monotonic()
        proc = subprocess.run(
            [self.name, *args], env=env, capture_output=True, text=True, timeout=timeout
        )
        seconds = time.monotonic() - start
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name} build failed ({proc.returncode}):\n{output[-6000:]}")
        return Build(tag=tag, seconds=seconds, output=output, image_id=self.image_id(tag))

    def image_id(self, ref: str) -> str:
        """The full id of an image."""
        return self.run("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()

    def image_size(self, ref: str) -> int:
        """Uncompressed size in bytes, as `<engine> images` reports it."""
        return int(self.run("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())

    def layers(self, ref: str) -> list[str]:
        """The image's filesystem layer digests, base first."""
        out = self.run(
            "image", "inspect", "--format", "{{range .RootFS.Layers}}{{println .}}{{end}}", ref
        )
        return [line for line in out.stdout.split() if line]


@dataclass
class Build:
    """One finished image build."""

    tag: str
    seconds: float
    output: str
    image_id: str

    def cached_steps(self) -> list[str]:
        """The Dockerfile instructions the engine took from its layer cache."""
        return [text for text, cached in _steps(self.output) if cached]

    def rebuilt_steps(self) -> list[str]:
        """The Dockerfile instructions the engine had to run again."""
        return [text for text, cached in _steps(self.output) if not cached]


def _steps(output: str) -> list[tuple[str, bool]]:
    """(instruction, was cached) for each step in podman/buildah or docker/BuildKit output."""
    steps: list[tuple[str, bool]] = []
    # podman/buildah: "[1/2] STEP 4/5: RUN ..." then "--> Using cache <id>" when cached.
    blocks = re.split(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: ", output, flags=re.M)
    if len(blocks) > 1:
        for block in blocks[1:]:
            first, _, rest = block.partition("\n")
            steps.append((first, "--> Using cache" in rest))
        return steps
    # BuildKit plain progress: "#7 [builder 4/4] RUN ..." and later "#7 CACHED".
    titles = dict(re.findall(r"^#(\d+) \[[^\]]*\d+/\d+\] (.*)$", output, flags=re.M))
    cached = set(re.findall(r"^#(\d+) CACHED$", output, flags=re.M))
    return [(text, num in cached) for num, text in titles.items()]


@dataclass
class Container:
    """A container started by a test, and how to reach it."""

    engine: Engine
    cid: str
    port: int
    started_at: float

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        proc = self.engine.run("logs", self.cid, check=False)
        return proc.stdout + proc.stderr

    def wait_log(self, pattern: re.Pattern[str], timeout: float) -> None:
        """Poll the container's output until `pattern` appears in it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pattern.search(self.logs()):
                return
            time.sleep(0.1)
        raise TimeoutError(f"no {pattern.pattern!r} in the logs after {timeout} s:\n{self.logs()}")

    def wait_accepted(self, timeout: float = 30) -> None:
        """Poll until a connection to the service is established and a worker has taken it.

        Read from the container's own /proc/net/tcp: the port forwarder in front of it may
        have answered the client before the connection reached the service.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            table = self.engine.run("exec", self.cid, "cat", "/proc/net/tcp").stdout
            backlog, established = tcp_port_state(table, CONTAINER_PORT)
            if backlog == 0 and established:
                return
            time.sleep(0.1)
        raise TimeoutError(f"no connection accepted after {timeout} s:\n{self.logs()}")

    def wait_ready(self, timeout: float = 120) -> float:
        """Poll GET /ready until 200; the seconds since `run` was called."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.base_url + "/ready", timeout=2).status_code == 200:
                    return time.monotonic() - self.started_at
            state = self.engine.run("inspect", "--format", "{{.State.Running}}", self.cid)
            if state.stdout.strip() != "true":
                raise RuntimeError(f"container exited before ready:\n{self.logs()}")
            time.sleep(0.05)
        raise TimeoutError(f"container not ready after {timeout} s:\n{self.logs()}")


@contextlib.contextmanager
def running(engine: Engine, image: str, *options: str) -> Iterator[Container]:
    """Run `image` detached with `options`, its port 8080 on a free loopback port."""
    port = free_port()
    started = time.monotonic()
    cid = engine.run(
        "run", "-d", *options, "-p", f"127.0.0.1:{port}:{CONTAINER_PORT}", image
    ).stdout.strip()
    try:
        yield Container(engine=engine, cid=cid, port=port, started_at=started)
    finally:
        # kill + rm -f means the same to docker and podman: no stop timeout to sit out.
        engine.run("kill", cid, check=False, timeout=60)
        engine.run("rm", "-f", cid, check=False, timeout=60)


def find_engine() -> Engine:
    """The engine the tests use, prepared; raises NoEngineError when there is none."""
    env = dict(os.environ)
    name = env.get("CONTAINER")
    if not name:
        if shutil.which("docker") and _answers(["docker", "info"], env):
            name = "docker"
        elif shutil.which("podman") or ENV_SCRIPT.is_file():
            name = "podman"
        else:
            raise NoEngineError("no docker daemon and no podman (CONTAINER=docker|podman)")
    if name == "podman" and "LOCAL_BASE_IMAGE" not in env and ENV_SCRIPT.is_file():
        env.update(_exports(ENV_SCRIPT, env))
    if not shutil.which(name, path=env.get("PATH")):
        raise NoEngineError(f"{name} is not installed")
    base = env.get("BASE_IMAGE") or env.get("LOCAL_BASE_IMAGE") or DEFAULT_BASE_IMAGE
    return Engine(name=name, env=env, base_image=base)


def snapshot_context(dest: Path, model_dir: Path | None = None) -> Path:
    """Copy the build context to `dest`, so builds see one consistent state of the tree.

    `model_dir` (another model, e.g. a candidate under test) replaces model/ in the copy.
    """
    shutil.copytree(REPO_ROOT, dest, ignore=shutil.ignore_patterns(*_NOT_CONTEXT), symlinks=True)
    if model_dir is not None and model_dir.resolve() != (REPO_ROOT / "model").resolve():
        shutil.rmtree(dest / "model", ignore_errors=True)
        shutil.copytree(model_dir, dest / "model")
    return dest


def _answers(cmd: list[str], env: dict[str, str]) -> bool:
    try:
        return subprocess.run(cmd, env=env, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _exports(script: Path, env: dict[str, str]) -> dict[str, str]:
    """Run the setup script and collect the `export NAME=value` lines it prints."""
    proc = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    found = re.findall(r"^export ([A-Z_][A-Z0-9_]*)=(.*)$", proc.stdout, flags=re.M)
    return {key: value.strip().strip("'\"") for key, value in found}
