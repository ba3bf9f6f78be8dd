"""Logs as JSON lines (the standard library's logging, one event per line), with the request id in each.

A request id names one caller's request across processes: the router takes the caller's `x-request-id`
metadata or makes one, returns it in the response's trailing metadata, and passes it to every shard it asks
(a coalesced batch carries its members' ids, comma-separated). `rpc_guard` sets it for the handler's task,
so every line logged while serving that request carries it. Each RPC is logged at DEBUG (method, code,
milliseconds) and, past the process's slow threshold, at WARNING: the slow-query log.
"""
from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import uuid
from collections.abc import Iterable

REQUEST_ID_KEY = "x-request-id"
MAX_REQUEST_ID_CHARS = 128  # a caller's id longer than this is cut, so it cannot bloat every log line
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("quiver_request_id", default="")

# LogRecord's own attributes; anything else on a record came from `extra=` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            event["request_id"] = request_id
        event.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """The process's logging: JSON lines (or plain text) on stderr at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def incoming_request_id(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The caller's request id (from its metadata), or a new one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            if text:
                return text[:MAX_REQUEST_ID_CHARS]
    return uuid.uuid4().hex[:16]


def outgoing_metadata(request_ids: Iterable[str] | None = None) -> tuple[tuple[str, str], ...]:
    """Metadata for a call to a shard: the given ids (a batch's), else this task's request id."""
    ids = list(dict.fromkeys(request_ids)) if request_ids is not None else [REQUEST_ID.get()]
    joined = ",".join(i for i in ids if i)
    return ((REQUEST_ID_KEY, joined),) if joined else ()
