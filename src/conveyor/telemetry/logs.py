"""Log set-up for every process: text for people, one JSON object per line for machines.

JSON is a small stdlib formatter rather than python-json-logger: the fields are few and known
(time, level, logger, message, request id, the ``extra`` of a record), and it keeps conveyor
free of a dependency for some thirty lines.

The request id travels in a context variable: set by the HTTP middleware for the request's task
(and copied into the threads it starts), and by a worker to the id of the request that created
the job it runs. Every record gets it as ``request_id``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("conveyor_request_id", default=None)
#: The attempt a worker is running (job transitions logged meanwhile name it).
ATTEMPT: ContextVar[int | None] = ContextVar("conveyor_attempt", default=None)

#: A client's X-Request-ID is kept if it is short and harmless in a log line and a header.
_VALID_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
#: Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id",
                                                     "color_message"}  # uvicorn's, with ANSI
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Libraries whose INFO lines are chatter, shown only at DEBUG: libvips (through pyvips) logs
#: about fifteen per image ("threadpool completed with 1 workers"), alembic one per plug-in
#: at every start. Their warnings and errors still show.
CHATTY = ("pyvips", "alembic.runtime.plugins")


def request_id_from(header: str | None) -> str:
    """The client's ``X-Request-ID`` if valid (1-128 of ``A-Za-z0-9._:@/+=-``), else a new one."""
    if header is not None and _VALID_ID.match(header):
        return header
    return secrets.token_hex(16)


class ContextFilter(logging.Filter):
    """Adds ``request_id`` (or None) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, then extras."""

    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self.static,
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            out["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: str, fmt: str, *, process: str | None = None) -> None:
    """Send every logger (uvicorn's included) to stderr in ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter({"process": process} if process else None))
    else:
        prefix = f"{process} " if process else ""
        handler.setFormatter(logging.Formatter(
            TEXT_FORMAT.replace("%(levelname)s", prefix + "%(levelname)s")))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in CHATTY:
        logging.getLogger(name).setLevel(
            logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        # uvicorn's loggers go through the root handler (and its format) like ours.
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
