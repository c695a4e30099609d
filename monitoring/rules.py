"""The rule files in monitoring/rules/, read as data: load, compress time, inline recordings.

Three uses, one source:
- Cloud Monitoring has no rule evaluator on Cloud Run, so `inline` writes every recorded
  series an alert or a dashboard chart uses out as its full expression (monitoring/cloud.py).
- The end-to-end test cannot wait an hour for an hour-long window, so `compress` divides
  every time window, offset, `for` and evaluation interval by one factor. The expressions,
  thresholds, labels and annotations stay as they are: every threshold is a ratio or a
  per-second rate, so the compressed rules ask the same questions of a shorter history.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RULES_DIR = Path(__file__).resolve().parent / "rules"
RULE_FILES = tuple(sorted(RULES_DIR.glob("*.rules.yml")))

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_UNITS_MS["y"] = 365 * _UNITS_MS["d"]
_DURATION = re.compile(r"^(?:\d+(?:ms|[smhdwy]))+$")
_DURATION_PART = re.compile(r"(\d+)(ms|[smhdwy])")
# A double-quoted PromQL string, or what the caller looks for; strings are left alone, so
# a label value such as "[45].." is never taken for a range.
_STRING = r'"(?:[^"\\]|\\.)*"'
_TIME = re.compile(
    _STRING + r"|\[(?P<range>[0-9a-z]+)(?::(?P<step>[0-9a-z]*))?\]|\boffset\s+(?P<offset>[0-9a-z]+)"
)


@dataclass(frozen=True)
class Rule:
    """One recording or alerting rule, with the group it belongs to."""

    group: str
    interval: str
    expr: str
    record: str | None = None
    alert: str | None = None
    for_: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The recorded series' name or the alert's name."""
        return self.record or self.alert or ""


def load(paths: Iterable[Path] = RULE_FILES) -> list[dict[str, Any]]:
    """The rule groups of `paths`, in order, as Prometheus reads them."""
    groups: list[dict[str, Any]] = []
    for path in paths:
        groups.extend(yaml.safe_load(Path(path).read_text(encoding="utf-8"))["groups"])
    return groups


def rules(groups: list[dict[str, Any]]) -> list[Rule]:
    """Every rule of `groups`, flattened."""
    out = []
    for group in groups:
        for rule in group["rules"]:
            out.append(
                Rule(
                    group=group["name"],
                    interval=group.get("interval", "1m"),
                    expr=rule["expr"],
                    record=rule.get("record"),
                    alert=rule.get("alert"),
                    for_=rule.get("for"),
                    labels=dict(rule.get("labels", {})),
                    annotations=dict(rule.get("annotations", {})),
                )
            )
    return out


def seconds(duration: str) -> float:
    """A Prometheus duration ("1h30m", "500ms") in seconds."""
    if not _DURATION.match(duration):
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(n) * _UNITS_MS[u] for n, u in _DURATION_PART.findall(duration)) / 1000


def duration(secs: float) -> str:
    """`secs` as a Prometheus duration, in the largest units that express it exactly."""
    ms = round(secs * 1000)
    if ms <= 0:
        raise ValueError(f"a duration must be positive, got {secs} s")
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        count, ms = divmod(ms, _UNITS_MS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def compress(groups: list[dict[str, Any]], factor: float) -> list[dict[str, Any]]:
    """A copy of `groups` with every window, offset, `for` and interval divided by `factor`."""

    def scale(text: str) -> str:
        return duration(seconds(text) / factor)

    def scale_expr(expr: str) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group("offset"):
                return f"offset {scale(match.group('offset'))}"
            if match.group("range"):
                step = match.group("step")
                if step is None:
                    return f"[{scale(match.group('range'))}]"
                return f"[{scale(match.group('range'))}:{scale(step) if step else ''}]"
            return match.group(0)  # a string

        return _TIME.sub(one, expr)

    out = copy.deepcopy(groups)
    for group in out:
        group["interval"] = scale(group.get("interval", "1m"))
        for rule in group["rules"]:
            rule["expr"] = scale_expr(rule["expr"])
            if "for" in rule:
                rule["for"] = scale(rule["for"])
    return out


def _sub_outside_strings(pattern: str, expr: str, replace: Callable[[re.Match[str]], str]) -> str:
    """`re.sub` of `pattern` (which must have a group `x`) everywhere but in PromQL strings."""
    regex = re.compile(_STRING + "|" + pattern)
    return regex.sub(lambda m: replace(m) if m.group("x") is not None else m.group(0), expr)


def squash(expr: str) -> str:
    """`expr` on one line: runs of whitespace outside strings become one space."""
    return _sub_outside_strings(r"(?P<x>\s+)", expr, lambda m: " ").strip()


def inline(expr: str, recorded: dict[str, str]) -> str:
    """`expr` with every recorded series it names replaced by its expression, recursively.

    A recorded series used with a range, matchers or an offset cannot be written out as a
    plain expression (it would need a subquery), so that raises ValueError: the alerts and
    charts only read recorded series at the present instant.
    """
    if not recorded:
        return squash(expr)
    names = "|".join(re.escape(n) for n in sorted(recorded, key=len, reverse=True))
    pattern = rf"(?<![\w:])(?P<x>{names})(?![\w:])(?P<after>\s*(?:[\[{{]|offset\b))?"

    def one(match: re.Match[str]) -> str:
        name = match.group("x")
        if match.group("after"):
            raise ValueError(f"{name} is used with a range, matchers or offset in: {expr}")
        return f"({inline(recorded[name], recorded)}){match.group('after') or ''}"

    return squash(_sub_outside_strings(pattern, expr, one))


def recorded(groups: list[dict[str, Any]]) -> dict[str, str]:
    """Each recorded series' name and its expression."""
    return {r.record: r.expr for r in rules(groups) if r.record}


def write(groups: list[dict[str, Any]], path: Path) -> Path:
    """Write `groups` as one rule file Prometheus and promtool read."""
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    return path
