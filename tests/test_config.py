"""Settings: read once from the environment, defaults that suit Cloud Run, bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from penguin_api.config import (
    DEFAULT_MODEL_DIR,
    Settings,
    SettingsError,
    available_cpus,
    decode_memory_mb,
    memory_limit_mb,
    shipped_model_dir,
)


def test_defaults_without_any_environment():
    settings = Settings.from_env({})
    assert settings.port == 8080
    assert settings.host == "0.0.0.0"
    assert settings.model_dir == DEFAULT_MODEL_DIR
    assert settings.ort_intra_op_threads == 1
    assert settings.top_k == 3
    assert settings.log_level == "INFO"
    assert settings.web_concurrency == available_cpus()
    assert settings.graceful_timeout <= 8  # fits Cloud Run's 10 s SIGTERM window


def test_default_model_dir_is_model_next_to_the_package():
    assert Path(__file__).resolve().parents[1] / "model" == DEFAULT_MODEL_DIR


def test_a_model_inside_the_package_as_a_wheel_installs_it_comes_first(tmp_path):
    package = tmp_path / "site-packages" / "penguin_api"
    (package / "model").mkdir(parents=True)
    assert shipped_model_dir(package) == tmp_path / "site-packages" / "model"  # no card yet
    (package / "model" / "model-card.json").write_text("{}")
    assert shipped_model_dir(package) == package / "model"


def test_every_setting_is_read_from_its_variable(tmp_path):
    env = {
        "PORT": "9000",
        "HOST": "127.0.0.1",
        "MODEL_DIR": str(tmp_path),
        "WEB_CONCURRENCY": "3",
        "ORT_INTRA_OP_THREADS": "2",
        "MAX_UPLOAD_MB": "2.5",
        "MAX_IMAGE_PIXELS": "1_000_000",
        "MAX_BATCH_FILES": "4",
        "TOP_K": "5",
        "LOG_LEVEL": "debug",
        "TIMEOUT": "12",
        "GRACEFUL_TIMEOUT": "5",
        "WARMUP_RUNS": "0",
        "READ_TIMEOUT": "7",
        "DECODE_MEMORY_MB": "300",
        "GOOGLE_CLOUD_PROJECT": "my-project",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "m"),
    }
    s = Settings.from_env(env)
    assert (s.port, s.host, s.model_dir, s.web_concurrency) == (9000, "127.0.0.1", tmp_path, 3)
    assert (s.ort_intra_op_threads, s.max_upload_mb, s.max_image_pixels) == (2, 2.5, 1_000_000)
    assert (s.max_batch_files, s.top_k, s.log_level) == (4, 5, "DEBUG")
    assert (s.timeout, s.graceful_timeout, s.warmup_runs) == (12, 5, 0)
    assert (s.read_timeout, s.decode_memory_mb, s.decode_memory_bytes) == (7, 300, 300 << 20)
    assert s.google_cloud_project == "my-project"
    assert s.prometheus_multiproc_dir == tmp_path / "m"
    assert s.max_upload_bytes == int(2.5 * 1024 * 1024)


def test_settings_are_frozen():
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_relative_model_dir_is_resolved_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({"MODEL_DIR": "elsewhere"}).model_dir == tmp_path / "elsewhere"


def test_empty_variables_mean_the_default():
    assert Settings.from_env({"PORT": "", "TOP_K": "  "}).port == 8080


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "0"),
        ("TOP_K", "-1"),
        ("WEB_CONCURRENCY", "0"),
        ("MAX_UPLOAD_MB", "lots"),
        ("LOG_LEVEL", "LOUD"),
        ("GRACEFUL_TIMEOUT", "-2"),
        ("READ_TIMEOUT", "0"),
        ("DECODE_MEMORY_MB", "0"),
        ("DECODE_MEMORY_MB", "much"),
    ],
)
def test_unusable_values_are_refused_with_the_variable_named(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def _cgroup(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_cpus_follow_a_cgroup_v2_quota(tmp_path):
    root = _cgroup(tmp_path, {"cpu.max": "100000 100000\n"})
    assert available_cpus(root) == 1


def test_fractional_quota_rounds_up_to_one_worker(tmp_path):
    root = _cgroup(tmp_path, {"cpu.max": "50000 100000\n"})
    assert available_cpus(root) == 1


def test_unlimited_cgroup_v2_falls_back_to_the_affinity_mask(tmp_path):
    import os

    root = _cgroup(tmp_path, {"cpu.max": "max 100000\n"})
    assert available_cpus(root) == len(os.sched_getaffinity(0))


def test_cpus_follow_a_cgroup_v1_quota(tmp_path):
    root = _cgroup(
        tmp_path, {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}
    )
    assert available_cpus(root) == 1


def test_quota_never_raises_cpus_above_the_affinity_mask(tmp_path):
    import os

    root = _cgroup(tmp_path, {"cpu.max": "6400000 100000\n"})
    assert available_cpus(root) == len(os.sched_getaffinity(0))


def test_no_cgroup_files_means_the_affinity_mask(tmp_path):
    import os

    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))


# --- the memory one decode may take --------------------------------------------------------


def test_each_decode_gets_its_workers_share_of_the_memory_less_fixed_costs():
    # 1 GiB, 2 workers, 20 MB uploads: (1024 - 96) / 2 - 192 - 4 * 20.
    assert decode_memory_mb(1024, 2, 20) == 192
    # One worker on the same instance has all of it.
    assert decode_memory_mb(1024, 1, 20) == 1024 - 96 - 192 - 80
    # Smaller uploads leave more for decoding.
    assert decode_memory_mb(1024, 2, 5) > decode_memory_mb(1024, 2, 20)


def test_an_instance_too_small_for_its_workers_still_decodes_small_images():
    assert decode_memory_mb(512, 4, 20) == 64


def test_without_a_known_memory_limit_decodes_have_no_budget_of_their_own():
    assert decode_memory_mb(None, 2, 20) is None
    assert Settings().decode_memory_bytes is None


def test_memory_follows_a_cgroup_v2_limit(tmp_path):
    root = _cgroup(tmp_path, {"memory.max": f"{1 << 30}\n"})
    assert memory_limit_mb(root, tmp_path / "no-meminfo") == 1024


def test_memory_follows_a_cgroup_v1_limit(tmp_path):
    root = _cgroup(tmp_path, {"memory/memory.limit_in_bytes": f"{512 << 20}\n"})
    assert memory_limit_mb(root, tmp_path / "no-meminfo") == 512


def test_an_unlimited_cgroup_means_the_machines_memory(tmp_path):
    root = _cgroup(
        tmp_path,
        {
            "memory.max": "max\n",
            "memory/memory.limit_in_bytes": "9223372036854771712\n",
            "meminfo": "MemTotal:       16384000 kB\nMemFree:  1 kB\n",
        },
    )
    assert memory_limit_mb(root, root / "meminfo") == 16000
    assert memory_limit_mb(root, root / "none") is None


def test_the_default_decode_memory_comes_from_this_machine():
    settings = Settings.from_env({"WEB_CONCURRENCY": "2", "MAX_UPLOAD_MB": "10"})
    assert settings.decode_memory_mb == decode_memory_mb(memory_limit_mb(), 2, 10)
