"""Settings, read once from the environment into a frozen dataclass and passed in.

Every setting is listed, with its default and meaning, in docs/deploy.md (Settings).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_model_dir(package_dir: Path = _PACKAGE_DIR) -> Path:
    """Where the shipped model is: inside the package when installed from a wheel (the build
    puts the repository's model/ there), else model/ beside the package (a checkout, an
    editable install, the container's /app)."""
    inside = package_dir / "model"
    return inside if (inside / "model-card.json").is_file() else package_dir.parent / "model"


#: The shipped model; MODEL_DIR overrides it.
DEFAULT_MODEL_DIR = shipped_model_dir()

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# --- the memory plan behind the default DECODE_MEMORY_MB -------------------------------
#: The Gunicorn master (with the pages its workers share), and what each worker adds (its
#: ONNX Runtime session, heap, thread stacks), in MiB. Measured in the container with 2
#: workers and the two-backbone 320 px model after 160 photos: master 53 MB RSS / 32 MB
#: PSS, each worker 161-164 MB PSS, 331 MB for all three by the cgroup's count; these
#: leave a margin of about 45 % over that (the Lite0 model needed 183 MB; 96 per worker).
MASTER_MB = 96
WORKER_MB = 192
#: Request bodies a worker may hold at once, in units of MAX_UPLOAD_MB: bodies being
#: received (penguin_api.worker's buffer budget, plus the one upload always let through),
#: and the copies multipart parsing makes of the one request being answered.
UPLOAD_COPIES = 4
#: The least a decode gets however small the instance: enough for a 4 MP image of any format.
MIN_DECODE_MB = 64


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told from outside; defaults suit Cloud Run."""

    port: int = 8080
    host: str = "0.0.0.0"
    model_dir: Path = DEFAULT_MODEL_DIR
    web_concurrency: int = 1
    ort_intra_op_threads: int = 1
    max_upload_mb: float = 20.0
    max_image_pixels: int = 50_000_000
    max_batch_files: int = 16
    top_k: int = 3
    log_level: str = "INFO"
    timeout: int = 30
    graceful_timeout: int = 8
    warmup_runs: int = 2
    read_timeout: int = 30
    #: Memory one decode may take, in MiB; None: no limit but MAX_IMAGE_PIXELS.
    #: From the environment it defaults to the instance's share (see `decode_memory_mb`).
    decode_memory_mb: float | None = None
    google_cloud_project: str | None = None
    prometheus_multiproc_dir: Path | None = None
    # Set by Cloud Run Jobs in each task: which share of a batch this process takes.
    cloud_run_task_index: int = 0
    cloud_run_task_count: int = 1
    cloud_run_task_attempt: int = 0

    @property
    def max_upload_bytes(self) -> int:
        """The upload limit in bytes (whole request body)."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def decode_memory_bytes(self) -> int | None:
        """The memory one decode may take, in bytes (None: no limit of its own)."""
        if self.decode_memory_mb is None:
            return None
        return int(self.decode_memory_mb * 1024 * 1024)

    @property
    def card_file(self) -> Path:
        """The model card inside the model directory."""
        return self.model_dir / "model-card.json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from `environ` (default: the process environment)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(f.name, raw.strip())
        if "web_concurrency" not in values:
            values["web_concurrency"] = available_cpus()
        if "decode_memory_mb" not in values:
            values["decode_memory_mb"] = decode_memory_mb(
                memory_limit_mb(),
                int(values["web_concurrency"]),  # type: ignore[call-overload]
                float(values.get("max_upload_mb", cls.max_upload_mb)),  # type: ignore[arg-type]
            )
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse values that would only fail later and more obscurely."""
        positive = (
            "port",
            "web_concurrency",
            "ort_intra_op_threads",
            "max_upload_mb",
            "max_image_pixels",
            "max_batch_files",
            "top_k",
            "timeout",
            "cloud_run_task_count",
            "read_timeout",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name.upper()} must be positive, got {getattr(self, name)}")
        if self.decode_memory_mb is not None and self.decode_memory_mb <= 0:
            raise SettingsError(f"DECODE_MEMORY_MB must be positive, got {self.decode_memory_mb}")
        if self.graceful_timeout < 0 or self.warmup_runs < 0:
            raise SettingsError("GRACEFUL_TIMEOUT and WARMUP_RUNS must not be negative")
        if not 0 <= self.cloud_run_task_index < self.cloud_run_task_count:
            raise SettingsError(
                f"CLOUD_RUN_TASK_INDEX={self.cloud_run_task_index} is not in 0.."
                f"{self.cloud_run_task_count - 1} "
                f"(CLOUD_RUN_TASK_COUNT={self.cloud_run_task_count})"
            )
        if self.cloud_run_task_attempt < 0:
            raise SettingsError("CLOUD_RUN_TASK_ATTEMPT must not be negative")
        if self.log_level not in _LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}")


def _parse(name: str, raw: str) -> object:
    """Convert one environment value to the type of the field it sets."""
    try:
        if name in ("host", "google_cloud_project"):
            return raw
        if name == "log_level":
            return raw.upper()
        if name in ("model_dir", "prometheus_multiproc_dir"):
            return Path(raw).expanduser().resolve()
        if name in ("max_upload_mb", "decode_memory_mb"):
            return float(raw)
        return int(raw.replace("_", ""))
    except ValueError:
        raise SettingsError(f"{name.upper()}={raw!r} is not a valid value") from None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: the cgroup CPU quota if any, else the affinity mask.

    Containers (Cloud Run, docker --cpus) see all host cores in os.cpu_count(); the
    quota is what they actually get, and one worker per quota CPU is the target.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota(root: Path) -> float | None:
    """The CPU quota in CPUs from cgroup v2 (cpu.max) or v1 (cfs_quota/period), or None."""
    try:  # cgroup v2: "<quota> <period>" or "max <period>"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for v1 in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        try:
            quota_us = int((root / v1 / "cpu.cfs_quota_us").read_text())
            period_us = int((root / v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def decode_memory_mb(limit_mb: float | None, workers: int, max_upload_mb: float) -> float | None:
    """The memory one decode may take: a worker's share of the instance, less its fixed costs.

    Each worker decodes one image at a time, so at most `workers` decodes run at once; each
    gets what is left of its share of `limit_mb` after the master, the worker itself and
    the request bodies it may hold (the constants above). None without a known limit.
    """
    if limit_mb is None:
        return None
    share = (limit_mb - MASTER_MB) / max(1, workers) - WORKER_MB - UPLOAD_COPIES * max_upload_mb
    return float(max(MIN_DECODE_MB, int(share)))


def memory_limit_mb(
    cgroup_root: Path = Path("/sys/fs/cgroup"), meminfo: Path = Path("/proc/meminfo")
) -> float | None:
    """The memory this instance may use, in MiB: its cgroup limit, else the machine's RAM.

    Cloud Run and `docker run --memory` set the cgroup limit (v2 memory.max, v1
    memory.limit_in_bytes); a process without one may use the machine's memory.
    """
    for path in (cgroup_root / "memory.max", cgroup_root / "memory" / "memory.limit_in_bytes"):
        try:
            raw = path.read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:  # "max", or v1's huge "no limit" value
            return int(raw) / (1024 * 1024)
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
