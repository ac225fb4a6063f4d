"""Logging for a server process: a level, text or JSON lines, the pid and the connection on each.

::

    python -m syncws serve --log-level debug --log-format json myapp:handler

Theory of operation
-------------------
syncws logs through :mod:`logging` (see :mod:`syncws.logs`) and configures
nothing by itself: an application decides where its lines go. The command
line does it for the server it runs, with :func:`configure`, *only when
nothing has configured logging yet*: the handler's module is imported
first, and one that calls :func:`logging.basicConfig` (or adds handlers to
the root logger) keeps its configuration whole.

Every line tells which process wrote it (``--processes`` runs several) and,
when it is about a connection, which one: :class:`ConnectionFilter` adds a
``connection`` attribute to each record, the first 8 hex digits of the
connection's id, as :func:`syncws.logs.connection_label` names it. It is
the connection the thread works for (the handler's thread and the reader
thread note theirs with :func:`syncws.logs.set_connection`), so a
handler's own lines carry it too, or the connection the line's arguments
name (a keepalive timeout, logged by the timer thread); ``-`` (``null`` in
JSON) for none. Text lines::

    2024-05-01 12:00:00,123 4242 1a2b3c4d INFO syncws.server: connection 1a2b3c4d opened: peer ...
    2024-05-01 12:00:00,456 4242 1a2b3c4d INFO chat: alice joined
    2024-05-01 12:00:01,789 4242 - INFO syncws.workers: worker 4242 serving on 127.0.0.1:8765

JSON lines, one object per line (:class:`JsonFormatter`)::

    {"time": "2024-05-01T12:00:00.123+00:00", "level": "INFO", "logger": "syncws.server",
     "pid": 4242, "connection": "1a2b3c4d", "message": "connection 1a2b3c4d opened: ..."}

Under gunicorn, nothing configures the root logger: syncws's lines went to
Python's last-resort handler (WARNING and above, without time or level).
:func:`use_gunicorn_logging`, which :func:`syncws.wsgi.gunicorn_post_worker_init`
calls, sends them to gunicorn's error log at its ``--log-level``.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import IO, Any, Optional

from .logs import LazyLabel, current_connection
from .safetext import escape_json

__all__ = ["FORMATS", "LEVELS", "TEXT_FORMAT", "ConnectionFilter", "JsonFormatter", "configure", "use_gunicorn_logging"]

#: The ``--log-level`` names, lowest first.
LEVELS = ("debug", "info", "warning", "error", "critical")

#: The ``--log-format`` names.
FORMATS = ("text", "json")

#: The text format: time, pid, connection (``-`` for none), level, logger, message.
TEXT_FORMAT = "%(asctime)s %(process)d %(connection)s %(levelname)s %(name)s: %(message)s"


def _connection_of(record: logging.LogRecord) -> Any:
    """The connection a record is about: the thread's, or one its arguments name."""
    connection = current_connection()
    if connection is not None:
        return connection
    args = record.args if isinstance(record.args, tuple) else ()
    for arg in args:
        if isinstance(arg, LazyLabel):
            return arg.connection
        if hasattr(type(arg), "is_client") and hasattr(type(arg), "id"):  # a WebSocketCommonProtocol
            return arg
    return None


class ConnectionFilter(logging.Filter):
    """Add ``connection`` to every record: the id of the connection it's about, or ``None``.

    Put it on a handler (a filter on a logger doesn't see the records of
    its children). It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Set ``record.connection``; keep the record.

        Args:
            record: the record.

        Returns:
            ``True``.
        """
        connection = _connection_of(record)
        record.connection = None if connection is None else connection.id.hex[:8]
        return True


class _TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT`, with ``-`` for a record without a connection."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "connection", None) is None:
            record.connection = "-"
            try:
                return super().format(record)
            finally:
                record.connection = None
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``,
    ``logger``, ``pid``, ``connection`` (or ``null``), ``message``, and
    ``exception`` (the traceback) when there is one.

    Non-ASCII text is written as it is, but for the characters that a
    reader may break a line at or a terminal may act on, written as
    ``\\uNNNN`` (:func:`syncws.safetext.escape_json`).

    Use it with :class:`ConnectionFilter` on the same handler.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render a record.

        Args:
            record: the record.

        Returns:
            The JSON line, without its newline.
        """
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "connection": getattr(record, "connection", None),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # Readable text, but peer text an application logs as it is can't
        # break the line or drive the terminal showing it.
        return escape_json(json.dumps(entry, ensure_ascii=False))


def configure(level: str = "info", format: str = "text", stream: Optional[IO[str]] = None) -> bool:
    """Send log lines to ``stream`` at ``level``, unless logging is configured.

    Args:
        level: one of :data:`LEVELS`.
        format: one of :data:`FORMATS`.
        stream: where lines go; standard error by default.

    Returns:
        Whether it configured logging: ``False`` when the root logger had
        handlers already (an application's :func:`logging.basicConfig`),
        which are then left as they are.

    Raises:
        ValueError: an unknown level or format.
    """
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    if format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {format!r}")
    root = logging.getLogger()
    if root.handlers:
        return False
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(ConnectionFilter())
    handler.setFormatter(JsonFormatter() if format == "json" else _TextFormatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    return True


def use_gunicorn_logging(error_log: logging.Logger) -> bool:
    """Send syncws's log lines to gunicorn's error log, at its level.

    Does nothing when the root logger has handlers (the application
    configured logging: syncws's lines go there) or when ``syncws``'s
    logger has handlers of its own.

    Args:
        error_log: gunicorn's ``gunicorn.error`` logger (``worker.log.error_log``).

    Returns:
        Whether it did.
    """
    target = logging.getLogger("syncws")
    if logging.getLogger().handlers or target.handlers:
        return False
    for handler in error_log.handlers:
        target.addHandler(handler)
    target.setLevel(error_log.getEffectiveLevel())
    # Not the root's as well, should the application configure it later:
    # every line once, in gunicorn's log.
    target.propagate = False
    return True
