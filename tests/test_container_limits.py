"""The container on a 1 GiB, 2-CPU instance with 2 workers, under the costliest uploads.

Concurrent uploads that cost most to decode (WebP at the pixel limit, WebP just inside
the decode budget, bodies near the upload limit) must all be answered, the container must
not be OOM-killed nor any worker restarted, and a normal upload must be answered after.
The figures (peak memory against the limit, answers) go to reports/container.json.
"""

from __future__ import annotations

import io
import re
import threading
from collections import Counter
from pathlib import Path

import pytest
import requests
from PIL import Image

from penguin_api import imaging
from penguin_api.config import Settings, decode_memory_mb
from tests.container_engine import Container, running

# The session's image and engine (test_container.py builds it from a snapshot of the tree).
from tests.test_container import _record, engine, image  # noqa: F401

MEMORY_MB = 1024
LIMITS = ("--memory", f"{MEMORY_MB}m", "--cpus", "2", "-e", "WEB_CONCURRENCY=2")
CLIENTS = 8


def _webp(size: tuple[int, int]) -> bytes:
    """A WebP with alpha: what costs most memory to decode, per pixel, of every format."""
    buf = io.BytesIO()
    Image.new("RGBA", size, (30, 90, 150, 200)).save(buf, "WEBP", lossless=True, method=0)
    return buf.getvalue()


def _large_body() -> bytes:
    """An uncompressed PNG just under the upload limit (the most a worker must hold)."""
    side = int((Settings().max_upload_bytes * 0.9 / 3) ** 0.5)
    buf = io.BytesIO()
    Image.radial_gradient("L").resize((side, side)).convert("RGB").save(
        buf, "PNG", compress_level=0
    )
    return buf.getvalue()


def _all_at_once(base_url: str, uploads: list[tuple[str, bytes]]) -> list[requests.Response]:
    answers: list[requests.Response | None] = [None] * len(uploads)
    barrier = threading.Barrier(len(uploads))

    def send(i: int) -> None:
        name, data = uploads[i]
        barrier.wait()
        answers[i] = requests.post(base_url + "/predict", files={"file": (name, data)}, timeout=180)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(uploads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    assert all(a is not None for a in answers), "a client got no answer at all"
    return answers  # type: ignore[return-value]


def _cgroup_memory(ctr: Container) -> dict[str, int]:
    """Peak memory use, its limit, and OOM kills, from the container's own cgroup (v1 or v2)."""
    script = (
        "cd /sys/fs/cgroup; if [ -f memory.max ]; then "
        "echo limit $(cat memory.max); echo peak $(cat memory.peak 2>/dev/null || echo 0); "
        "grep '^oom_kill ' memory.events; else cd memory; "
        "echo limit $(cat memory.limit_in_bytes); echo peak $(cat memory.max_usage_in_bytes); "
        "grep '^oom_kill ' memory.oom_control || echo oom_kill 0; fi"
    )
    out = ctr.engine.run("exec", ctr.cid, "sh", "-c", script).stdout
    return {key: int(value) for key, value in re.findall(r"^(\w+) (\d+)$", out, flags=re.M)}


@pytest.mark.container
def test_concurrent_costliest_uploads_on_1gib_with_2_workers_are_answered_without_oom(
    image,  # noqa: F811 - the fixture imported above
    penguin_photo: Path,
    request: pytest.FixtureRequest,
) -> None:
    budget = decode_memory_mb(MEMORY_MB, 2, Settings().max_upload_mb)
    assert budget is not None
    fits = imaging.max_pixels_within(int(budget * 2**20), "WEBP")
    side = int((0.95 * fits) ** 0.5)
    worst = _webp((7000, 7000))  # 49 MP: at the pixel limit, far past the decode budget
    inside = _webp((side, side))  # just inside the decode budget
    body = _large_body()
    rounds = {
        "49 MP WebP": [("limit.webp", worst)] * CLIENTS,
        "WebP in budget + 18 MB PNG": [("inside.webp", inside), ("large.png", body)]
        * (CLIENTS // 2),
    }
    with running(image.engine, image.build.tag, *LIMITS) as ctr:
        ctr.wait_ready()
        plan = re.search(r"decode memory: (\d+) MiB per decode", ctr.logs())
        seen: dict[str, Counter] = {}
        for name, uploads in [*rounds.items(), *rounds.items()]:  # each twice
            answers = _all_at_once(ctr.base_url, uploads)
            seen.setdefault(name, Counter()).update(
                f"{a.status_code} {a.json().get('type', 'ok')}" for a in answers
            )
            for answer in answers:
                if answer.status_code != 200:
                    assert answer.status_code == 413, answer.text
                    assert answer.json()["type"] == "/problems/image-too-large"
        with penguin_photo.open("rb") as f:
            after = requests.post(ctr.base_url + "/predict", files={"file": f}, timeout=60)
        memory = _cgroup_memory(ctr)
        state = ctr.engine.run(
            "inspect", "--format", "{{.State.Running}} {{.State.OOMKilled}}", ctr.cid
        ).stdout.split()
        logs = ctr.logs()

    booted = len(re.findall(r"Booting worker with pid", logs))
    figures = {
        "memory_limit_mb": memory.get("limit", 0) // 2**20,
        "peak_memory_mb": memory.get("peak", 0) // 2**20,
        "oom_kills": memory.get("oom_kill", 0),
        "decode_budget_mb": budget,
        "webp_in_budget_mp": round(side * side / 1e6, 1),
        "answers": {name: dict(counts) for name, counts in seen.items()},
    }
    _record(costliest_uploads_1gib_2_workers=figures)
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print(f"\n{request.node.name}: {figures}")

    assert plan and int(plan.group(1)) == budget, "the container derived another budget"
    assert state == ["true", "false"], "the container stopped or was OOM-killed"
    assert memory.get("oom_kill", 0) == 0, "the kernel killed a process in the container"
    assert booted == 2, "a worker was restarted"
    assert after.status_code == 200, after.text
    # Past the budget: refused up front; inside it: decoded, all of them, side by side.
    assert seen["49 MP WebP"] == Counter({"413 /problems/image-too-large": 2 * CLIENTS})
    assert seen["WebP in budget + 18 MB PNG"] == Counter({"200 ok": 2 * CLIENTS})
