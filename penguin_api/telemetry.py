"""What the service tells its operators: JSON log lines, request ids, traces, instance ids.

Log lines are one JSON object each, in the shape Cloud Logging reads from stdout
(`severity`, `message`, `logging.googleapis.com/trace`). Prometheus metrics live in
penguin_api.metrics.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import os
import re
import secrets
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_HANDLER_MARK = "_penguin_json"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d+))?(?:;o=([01]))?")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
#: Health probes and metric scrapes, which do not count as a worker's first request.
_PROBE_PATHS = frozenset({"/health", "/ready", "/metrics"})
#: The request-header atoms the JSON access line reads (the trace headers).
_ACCESS_REQUEST_ATOMS = frozenset({"{x-cloud-trace-context}i", "{traceparent}i"})
# LogRecord attributes that are not user-supplied `extra` fields.
_RECORD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
#: json.dumps(entry, default=str, ensure_ascii=False), without building an encoder per line.
_encode = json.JSONEncoder(default=str, ensure_ascii=False).encode


@dataclass(frozen=True)
class Trace:
    """A trace id from the caller's headers, with its span and sampling flag if given."""

    trace_id: str
    span_id: str | None = None
    sampled: bool | None = None

    def log_fields(self, project: str | None) -> dict[str, Any]:
        """The Cloud Logging fields that link a log line to this trace."""
        if not project:
            return {"trace_id": self.trace_id}
        out: dict[str, Any] = {
            "logging.googleapis.com/trace": f"projects/{project}/traces/{self.trace_id}"
        }
        if self.span_id:
            out["logging.googleapis.com/spanId"] = self.span_id
        if self.sampled is not None:
            out["logging.googleapis.com/trace_sampled"] = self.sampled
        return out


def parse_trace(cloud_trace: str | None, traceparent: str | None = None) -> Trace | None:
    """Read `X-Cloud-Trace-Context` (TRACE/SPAN;o=1), else W3C `traceparent`."""
    if cloud_trace and (m := _CLOUD_TRACE.match(cloud_trace.strip())):
        span = format(int(m.group(2)), "016x") if m.group(2) else None
        sampled = None if m.group(3) is None else m.group(3) == "1"
        return Trace(m.group(1).lower(), span, sampled)
    if traceparent and (m := _TRACEPARENT.match(traceparent.strip())):
        return Trace(m.group(1), m.group(2), int(m.group(3), 16) & 1 == 1)
    return None


def request_id_from(header: str | None) -> str:
    """The caller's request id if it is a sane token, else a fresh one."""
    if header and _REQUEST_ID_OK.match(header):
        return header
    return secrets.token_hex(16)


# --- per-request context, read by the log formatter ------------------------------------
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_trace: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("trace", default=None)


def bind_request(request_id: str, trace: Trace | None) -> list[contextvars.Token]:
    """Make log lines written during this request carry its id and trace."""
    return [_request_id.set(request_id), _trace.set(trace)]


def unbind_request(tokens: list[contextvars.Token]) -> None:
    """Undo `bind_request` at the end of the request."""
    _request_id.reset(tokens[0])
    _trace.reset(tokens[1])


# --- per-process identity ----------------------------------------------------------------
_identity: dict[str, Any] = {"pid": None, "id": "", "served": False}


def _this_process() -> dict[str, Any]:
    # Keyed on the pid so a forked worker never inherits its parent's identity.
    if _identity["pid"] != os.getpid():
        _identity.update(pid=os.getpid(), id=f"{secrets.token_hex(4)}-{os.getpid()}", served=False)
    return _identity


def instance_id() -> str:
    """An id for this worker process, stable for its life, new for its replacement."""
    return _this_process()["id"]


def first_request() -> bool:
    """True exactly once per process: on the first request it serves (a cold start).

    Health probes and metric scrapes are not counted (see `init_app`).
    """
    state = _this_process()
    if state["served"]:
        return False
    state["served"] = True
    return True


# --- logging ---------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per line, with Cloud Logging's field names."""

    def __init__(self, project: str | None = None) -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage() if record.name != "gunicorn.access" else "",
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "logger": record.name,
            "pid": record.process,
            "instance_id": instance_id(),
        }
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            entry.update(self._access_fields(record.args))
        else:
            request_id, trace = _request_id.get(), _trace.get()
            if request_id:
                entry["request_id"] = request_id
            if trace:
                entry.update(trace.log_fields(self.project))
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return _encode(entry)

    def _access_fields(self, atoms: Mapping[str, Any]) -> dict[str, Any]:
        """Gunicorn's access-log atoms as Cloud Logging's `httpRequest`."""
        method, path, status = atoms["m"], atoms["U"], atoms["s"]
        query = atoms["q"]
        out: dict[str, Any] = {
            "message": f"{method} {path} {status}",
            "httpRequest": {
                "requestMethod": method,
                "requestUrl": f"{path}?{query}" if query and query != "-" else path,
                "status": int(status) if str(status).isdigit() else status,
                "responseSize": str(atoms["B"] or 0),
                "userAgent": atoms["a"],
                "remoteIp": atoms["h"],
                "protocol": atoms["H"],
                "latency": f"{float(atoms['L']):.6f}s",
            },
        }
        request_id = atoms["{x-request-id}o"]
        if request_id and request_id != "-":
            out["request_id"] = request_id
        trace = parse_trace(atoms["{x-cloud-trace-context}i"], atoms["{traceparent}i"])
        if trace:
            out.update(trace.log_fields(self.project))
        return out


def configure_logging(level: str = "INFO", project: str | None = None) -> None:
    """Send the root logger's records to stdout as JSON lines (once per process)."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        if getattr(handler, _HANDLER_MARK, False):
            handler.setFormatter(JsonFormatter(project))
            return
    handler = logging.StreamHandler(sys.stdout)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter(project))
    root.addHandler(handler)


class _AccessAtoms(dict):
    """Access-line atoms as Gunicorn's SafeAtoms presents them ('-' for one not collected).

    Built escaped in place, so Gunicorn need not copy them into a SafeAtoms per request.
    """

    __slots__ = ()

    def __missing__(self, key: str) -> str:
        return "-"


def gunicorn_logger_class(project: str | None) -> type:
    """A Gunicorn logger whose error and access logs are JSON lines on stdout."""
    from gunicorn.glogging import Logger as _GunicornLogger  # only the server needs gunicorn
    from gunicorn.glogging import SafeAtoms

    def wrap_atoms(atoms: Mapping[str, Any]) -> Mapping[str, Any]:
        return atoms if isinstance(atoms, _AccessAtoms) else SafeAtoms(atoms)

    class JsonGunicornLogger(_GunicornLogger):
        atoms_wrapper_class = staticmethod(wrap_atoms)

        def atoms(self, resp: Any, req: Any, environ: Mapping[str, Any], request_time: Any):
            """Only the atoms the JSON access line uses (JsonFormatter._access_fields).

            Gunicorn's own builds some thirty more for every request (a formatted date,
            every header), which the line never shows.
            """
            status = resp.status
            if isinstance(status, str):
                status = status.split(None, 1)[0]
            atoms = _AccessAtoms(
                {
                    "h": environ.get("REMOTE_ADDR", "-"),
                    "m": environ.get("REQUEST_METHOD"),
                    "U": environ.get("PATH_INFO"),
                    "q": environ.get("QUERY_STRING"),
                    "H": environ.get("SERVER_PROTOCOL"),
                    "s": status,
                    "B": getattr(resp, "sent", None),
                    "a": environ.get("HTTP_USER_AGENT", "-"),
                    "L": f"{request_time.seconds}.{request_time.microseconds:06d}",
                }
            )
            for name, value in getattr(req, "headers", ()):
                key = f"{{{name.lower()}}}i"
                if key in _ACCESS_REQUEST_ATOMS:
                    atoms[key] = value
            for name, value in resp.headers:
                if name.lower() == "x-request-id":
                    atoms["{x-request-id}o"] = value
            for key, value in atoms.items():  # what SafeAtoms does to each string
                if isinstance(value, str) and '"' in value:
                    atoms[key] = value.replace('"', '\\"')
            return atoms

        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for log in (self.error_log, self.access_log):
                for handler in list(log.handlers):
                    if isinstance(handler, logging.StreamHandler) and handler.stream in (
                        sys.stderr,
                        sys.stdout,
                    ):
                        # Everything on stdout, as Cloud Run's log agent expects JSON there.
                        handler.setStream(sys.stdout)
                    handler.setFormatter(JsonFormatter(project))

    return JsonGunicornLogger


# --- per-request hooks -------------------------------------------------------------------
def init_app(app: Any) -> None:
    """Give every response (errors included) its request id, timings and instance headers."""
    from flask import g, request

    from penguin_api import metrics

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        g.timings = {}
        headers = request.headers
        g.request_id = request_id_from(headers.get("X-Request-Id"))
        g.log_tokens = bind_request(
            g.request_id,
            parse_trace(headers.get("X-Cloud-Trace-Context"), headers.get("traceparent")),
        )

    @app.after_request
    def _finish(response: Any) -> Any:
        state = g._get_current_object()  # one context lookup, not one per attribute
        req = request._get_current_object()
        total = time.perf_counter() - getattr(state, "started", time.perf_counter())
        timings = getattr(state, "timings", None) or {}
        server_timing = [f"{name};dur={seconds * 1000:.1f}" for name, seconds in timings.items()]
        server_timing.append(f"total;dur={total * 1000:.1f}")
        headers = response.headers
        headers["X-Request-Id"] = getattr(state, "request_id", None) or request_id_from(None)
        headers["X-Instance-Id"] = instance_id()
        headers["Server-Timing"] = ", ".join(server_timing)
        # Probes and scrapes do not use up the flag: the first real request a worker
        # serves is the one a client sees as cold.
        if req.path not in _PROBE_PATHS and first_request():
            headers["X-Cold-Start"] = "1"
            metrics.COLD_STARTS.inc()
        rule = req.url_rule
        endpoint = rule.rule if rule else "unmatched"
        metrics.child(metrics.REQUESTS, endpoint, req.method, str(response.status_code)).inc()
        metrics.child(metrics.REQUEST_SECONDS, endpoint).observe(total)
        return response

    @app.teardown_request
    def _unbind(_exc: BaseException | None) -> None:
        tokens = g.pop("log_tokens", None)
        if tokens:
            unbind_request(tokens)
