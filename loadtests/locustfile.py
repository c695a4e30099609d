"""What a client of the penguin API does under load: upload a photo, read the answer, repeat.

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8080 \\
        --users 10 --run-time 2m --shape steady --images ../shared/data --record out/requests.jsonl

--users is the base user count of the shape and --run-time its length (see shapes.py);
each user uploads about --user-rps photos a second. Every request is appended to --record
as a JSON line (recording.py) for report.py. Without --images, generated JPEGs from 0.3 to
12 megapixels are uploaded, so the test always runs.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from pathlib import Path

import gevent
from locust import HttpUser, LoadTestShape, events, task
from locust.runners import MasterRunner

if __package__ in (None, ""):  # Locust imports this file by path; make `loadtests` importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests import shapes
from loadtests.images import PhotoPool
from loadtests.recording import Recorder, make_row

log = logging.getLogger("loadtests")
_state: dict = {"pool": None, "recorder": None}


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    group = parser.add_argument_group("penguin load test")
    group.add_argument("--images", default="", help="folder of photos, searched recursively")
    group.add_argument("--record", default="requests.jsonl", help="JSONL file, one row a request")
    group.add_argument("--shape", default="steady", choices=sorted(shapes.SHAPES))
    group.add_argument("--user-rps", type=float, default=0.5, help="uploads per second per user")
    group.add_argument(
        "--idle-gap",
        type=float,
        default=shapes.DEFAULT_IDLE_GAP_S,
        help="idle-gaps: seconds without traffic between bursts",
    )
    group.add_argument(
        "--burst",
        type=float,
        default=shapes.DEFAULT_BURST_S,
        help="idle-gaps: seconds each burst lasts",
    )


@events.init.add_listener
def _on_init(environment, **_kwargs) -> None:
    opts = environment.parsed_options
    if opts is None or isinstance(environment.runner, MasterRunner):
        return  # a distributed master sends no requests; its workers load their own photos
    pool = PhotoPool.from_folder(opts.images or None)
    log.info("uploading %s", pool.describe())
    _state["pool"] = pool


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    _state["recorder"] = Recorder(environment.parsed_options.record)


@events.request.add_listener
def _on_request(
    response_time,
    response_length,
    response=None,
    exception=None,
    start_time=None,
    context=None,
    **_kwargs,
) -> None:
    recorder: Recorder | None = _state["recorder"]
    if recorder is None:
        return
    context = context or {}
    recorder.write(
        make_row(
            start_time=start_time,
            response_time=response_time,
            response_length=response_length,
            response=response,
            exception=exception,
            users=context.get("users"),
            upload_bytes=context.get("upload_bytes"),
        )
    )


@events.test_stop.add_listener
def _on_test_stop(environment, **_kwargs) -> None:
    recorder: Recorder | None = _state["recorder"]
    if recorder is not None:
        recorder.close()
        log.info("recorded %d requests in %s", recorder.count, recorder.path)


class PhotoUploader(HttpUser):
    """Someone with a folder of photos: uploads one, reads the species, picks the next."""

    def on_start(self) -> None:
        self._rng = random.Random()
        self._rate = self.environment.parsed_options.user_rps
        # Users who arrive together do not all click in the same millisecond.
        gevent.sleep(self._rng.uniform(0, 1 / self._rate))
        self._started = time.monotonic()

    def wait_time(self) -> float:
        # One upload every 1/user_rps s on average, jittered so users do not click in
        # lockstep. The answer's wait counts towards the pause, but a user kept waiting
        # does not make up for it afterwards with a burst of uploads.
        pause = self._rng.uniform(0.5, 1.5) / self._rate
        return max(0.0, pause - (time.monotonic() - self._started))

    @task
    def classify_photo(self) -> None:
        self._started = time.monotonic()
        photo = _state["pool"].pick(self._rng)
        with self.client.post(
            "/predict",
            files={"file": (photo.name, photo.data, photo.content_type)},
            name="/predict",
            # users: how many were running when this request left (not when it came back)
            context={"upload_bytes": len(photo.data), "users": self.environment.runner.user_count},
            catch_response=True,
        ) as resp:
            if resp.status_code == 200 and not _has_species(resp):
                resp.failure("200 without a JSON body with a species field")


def _has_species(resp) -> bool:
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "species" in body


class NamedShape(LoadTestShape):
    """The shape chosen with --shape, from --users base users over --run-time seconds."""

    use_common_options = True

    def __init__(self) -> None:
        super().__init__()
        self._shape = None

    def tick(self) -> tuple[int, float] | None:
        if self._shape is None:
            opts = self.runner.environment.parsed_options
            if not opts.run_time:
                raise SystemExit("give a duration with --run-time (e.g. 2m)")
            self._shape = shapes.build(
                opts.shape,
                users=opts.num_users or 10,
                duration=opts.run_time,
                idle_gap=opts.idle_gap,
                burst=opts.burst,
            )
            log.info("shape %s: %s", opts.shape, self._shape)
            if isinstance(self._shape, shapes.IdleGaps) and self._shape.bursts < 2:
                log.warning("idle-gaps: --run-time allows one burst only; no traffic after idle")
        users = self._shape.users_at(self.get_run_time())
        if users is None:
            return None
        # Reach each new level within about a second, up or down: a spike is a spike, not a
        # ramp, and Locust stops users batch by batch, each batch awaiting in-flight requests.
        return users, max(1.0, float(users), float(self.get_current_user_count()))
