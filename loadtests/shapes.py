"""Load shapes by name: how many users run at each second of a test.

Each user uploads about `user_rps` photos a second (0.5 by default: one every 2 s), so the
request rate follows the user count. With the default 10 base users:

  steady     10 users for the whole run                          ~5 req/s, the expected load
  ramp10x    10 -> 100 users over the first 3/4, then held       ~5 -> ~50 req/s: autoscaling
  spike      10, then 100 within a second for 1/5 of the run,    a sudden burst: does the
             then 10 again                                       service queue, shed or scale?
  idle-gaps  `burst` s at 10 users, then `idle_gap` s with none,  bursts after an idle longer
             repeated until the run ends                         than Cloud Run's scale-down:
                                                                 cold starts on demand

A shape is a plain object with `users_at(t) -> int | None` (None: the test is over), so it
can be checked without Locust; locustfile.py's NamedShape hands it to Locust.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Cloud Run keeps an idle instance for up to about 15 minutes; wait a minute longer.
DEFAULT_IDLE_GAP_S = 16 * 60
DEFAULT_BURST_S = 60.0


@dataclass(frozen=True)
class Steady:
    """`users` users from start to end: the load the service is sized for."""

    users: int
    duration: float

    def users_at(self, t: float) -> int | None:
        return self.users if t < self.duration else None


@dataclass(frozen=True)
class Ramp10x:
    """Linear climb from `users` to ten times that over 3/4 of the run, then held."""

    users: int
    duration: float

    def users_at(self, t: float) -> int | None:
        if t >= self.duration:
            return None
        climb = 0.75 * self.duration
        frac = min(1.0, t / climb) if climb > 0 else 1.0
        return round(self.users + frac * 9 * self.users)


@dataclass(frozen=True)
class Spike:
    """Base load, a tenfold burst over the middle fifth of the run, then base load again."""

    users: int
    duration: float

    def users_at(self, t: float) -> int | None:
        if t >= self.duration:
            return None
        in_spike = 0.4 * self.duration <= t < 0.6 * self.duration
        return 10 * self.users if in_spike else self.users


@dataclass(frozen=True)
class IdleGaps:
    """Bursts of `burst` s at `users` users separated by `idle_gap` s without any traffic."""

    users: int
    duration: float
    idle_gap: float = DEFAULT_IDLE_GAP_S
    burst: float = DEFAULT_BURST_S

    def users_at(self, t: float) -> int | None:
        if t >= self.duration:
            return None
        return self.users if t % (self.burst + self.idle_gap) < self.burst else 0

    @property
    def bursts(self) -> int:
        """How many bursts start before the run ends."""
        return math.ceil(self.duration / (self.burst + self.idle_gap))


SHAPES = {"steady": Steady, "ramp10x": Ramp10x, "spike": Spike, "idle-gaps": IdleGaps}


def build(
    name: str,
    users: int,
    duration: float,
    idle_gap: float = DEFAULT_IDLE_GAP_S,
    burst: float = DEFAULT_BURST_S,
):
    """The shape called `name` for `users` base users over `duration` seconds."""
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; choose one of {', '.join(SHAPES)}")
    if users < 1 or duration <= 0:
        raise ValueError("a shape needs at least one user and a positive duration")
    if name == "idle-gaps":
        return IdleGaps(users, duration, idle_gap=idle_gap, burst=burst)
    return SHAPES[name](users, duration)
