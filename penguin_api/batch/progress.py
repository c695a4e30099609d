"""How a run shows itself: a progress bar on a terminal (tqdm), plain periodic lines in a
log (Cloud Run, CI, a file), and the summary at the end, all on standard error."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from penguin_api.batch.rows import Outcome


class Progress:
    """Counts photos as they are written; draws a bar or prints a line now and then."""

    def __init__(self, total: int, *, stream: TextIO, bar: bool, every: float, label: str) -> None:
        self.total = total
        self.done = 0
        self._stream = stream
        self._every = every
        self._label = label
        self._started = time.monotonic()
        self._last_line = self._started
        self._bar = None
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, unit="photo", file=stream, dynamic_ncols=True, smoothing=0.05,
                desc=label,
            )  # fmt: skip

    def update(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if now - self._last_line >= self._every and self.done < self.total:
            self._last_line = now
            print(self._line(now), file=self._stream, flush=True)

    def _line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else None
        percent = 100 * self.done / self.total if self.total else 100
        eta = f", about {_duration(left)} left" if left is not None else ""
        return (
            f"{self._label}: {self.done:,}/{self.total:,} photos ({percent:.0f}%), "
            f"{rate:.1f} photos/s{eta}"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class Summary:
    """Counts over every row of a result: species, no penguin, not sure, unreadable."""

    photos: int = 0
    species: Counter[str] = field(default_factory=Counter)
    no_penguin: int = 0
    uncertain: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: Outcome) -> None:
        self.photos += 1
        if outcome.error_type:
            self.errors[outcome.error_type.rsplit("/", 1)[-1]] += 1
        elif outcome.species is None:
            self.no_penguin += 1
        else:
            self.species[outcome.species] += 1
            self.uncertain += outcome.uncertain

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def lines(self, where: str) -> list[str]:
        """The summary block for `where` (a file, a bucket folder, standard output)."""
        answered = self.photos - self.failed
        lines = [f"{where}: {self.photos:,} photos, {answered:,} answered"]
        if self.species:
            listed = ", ".join(f"{name} {n:,}" for name, n in self.species.most_common())
            lines.append(f"  species: {listed}")
        lines.append(f"  no penguin: {self.no_penguin:,}")
        if self.uncertain:
            lines.append(f"  not sure (below the model's confidence threshold): {self.uncertain:,}")
        if self.errors:
            kinds = ", ".join(f"{kind} {n:,}" for kind, n in self.errors.most_common())
            lines.append(f"  could not be read: {self.failed:,} ({kinds})")
        return lines


def rate_line(label: str, photos: int, seconds: float, workers: int, earlier: int) -> str:
    """This run's pace: photos classified, time from ready workers to the last row, rate."""
    if photos == 0:
        return f"{label}: nothing left to classify"
    rate = photos / seconds if seconds > 0 else 0.0
    resumed = f"; {earlier:,} were done before" if earlier else ""
    return (
        f"{label}: classified {photos:,} photos in {seconds:.1f} s ({rate:.1f} photos/s, "
        f"{workers} worker{'s' if workers != 1 else ''}){resumed}"
    )
