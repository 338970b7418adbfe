"""Structured logging: one JSON object per line, with the fields passed in ``extra``."""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import IO, Any

from cloudtrail_es.core.redact import redact

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        text = json.dumps(line, default=str, ensure_ascii=False)
        if text.isascii():
            return redact(text)
        # A lone surrogate (an object key read from JSON, say) cannot be written as UTF-8:
        # written as its JSON escape instead, the line is not lost.
        return redact(text.encode("utf-8", "backslashreplace").decode("utf-8"))


class _JsonHandler(logging.StreamHandler):
    """Writes to the given stream, or to whatever ``sys.stderr`` is at the time."""

    def __init__(self, stream: IO[str] | None) -> None:
        super().__init__(stream)
        self._fixed_stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = self._fixed_stream or sys.stderr
        super().emit(record)


def configure_logging(level: str = "INFO", stream: IO[str] | None = None, replace: bool = True) -> None:
    """Send logs as JSON lines to ``stream`` (stderr by default).

    Replaces a handler installed here before (unless ``replace`` is false: a second
    destination at its own level) and, inside Lambda, the runtime's plain-text one;
    other handlers (a test's capture, say) are left alone.
    """
    root = logging.getLogger()
    in_lambda = "AWS_LAMBDA_RUNTIME_API" in os.environ
    for existing in list(root.handlers):
        if replace and (in_lambda or isinstance(existing, _JsonHandler)):
            root.removeHandler(existing)
    handler = _JsonHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(level)
    root.addHandler(handler)
    ours = [h.level for h in root.handlers if isinstance(h, _JsonHandler)]
    root.setLevel(min(ours) if not replace else handler.level)
    logging.getLogger("botocore").setLevel(max(root.level, logging.WARNING))
    logging.getLogger("urllib3").setLevel(max(root.level, logging.WARNING))
