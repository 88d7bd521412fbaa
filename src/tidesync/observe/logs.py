"""Log output: ``--log-format text`` (the default) or ``json``, one object per line.

A JSON line has ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message`` and, where known,
``pipeline``, ``entity`` and ``position``; a traceback is ``exc_info``. The
three context fields come from, first to last:

1. the record itself: ``log.warning(..., extra={"entity": e.entity, "position": p})``;
2. :func:`bind`, for a block of code that knows them (a context variable, so it
   follows the asyncio tasks started inside the block);
3. for ``pipeline`` only, the engine's task names (``NAME:read``,
   ``NAME:write``, ...): a line logged from a pipeline's own tasks names it.

Secrets are masked as in text logs (:class:`~tidesync.secrets.RedactingFilter`
on the handler masks the message and the traceback), and again in every other
field of the line before it is serialised, so a value passed in ``extra`` is
masked too.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import logging
import re
from collections.abc import Iterator
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

from tidesync.secrets import REDACTOR

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
CONTEXT_FIELDS = ("pipeline", "entity", "position")
_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("tidesync_log_context", default=None)
_TASK = re.compile(r"^(?P<pipeline>.+):(?:read|write|stop|fanout|lease|lease-stop)$")


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Within the block, log lines carry ``fields`` (pipeline, entity, position) unless a record has its own."""
    token = _CONTEXT.set({**(_CONTEXT.get() or {}), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def _task_pipeline() -> str | None:
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop in this thread
        return None
    match = _TASK.match(task.get_name()) if task is not None else None
    return match["pipeline"] if match else None


class ContextFilter(logging.Filter):
    """Sets ``pipeline``/``entity``/``position`` on each record from :func:`bind` and the task name."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _CONTEXT.get() or {}
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None and bound.get(name) is not None:
                setattr(record, name, bound[name])
        if getattr(record, "pipeline", None) is None:
            pipeline = _task_pipeline()
            if pipeline is not None:
                record.pipeline = pipeline
        return True


class RedactingJsonFormatter(JsonFormatter):
    """python-json-logger's formatter with every field of the line masked, positions as text, and
    ``time`` in ISO 8601 UTC with milliseconds (what log shippers parse without configuration)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        position = log_data.get("position")
        if position is not None and not isinstance(position, str | int | float):
            log_data["position"] = str(position)
        return REDACTOR.redact_obj(log_data)  # type: ignore[no-any-return]


def json_formatter() -> logging.Formatter:
    return RedactingJsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        json_default=str,
    )


def configure_logging(level: int, log_format: LogFormat) -> None:
    """Log to stderr at ``level`` in ``log_format``, with context fields and secrets masked.

    Like :func:`logging.basicConfig`, it leaves a root logger that has handlers
    (a test runner's) as it is.
    """
    from tidesync.secrets import install_log_redaction

    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()  # stderr
        handler.setFormatter(json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
        handler.addFilter(ContextFilter())
        root.addHandler(handler)
        root.setLevel(level)
    install_log_redaction()
