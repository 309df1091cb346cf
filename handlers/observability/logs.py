"""The handler's log lines: TorchServe's plain ``%(message)s`` lines, or one JSON object per line
(python-json-logger) when ``handler.observability.log_format`` is json; and the per-request access
line. Every value of an access line is the handler's own (a validated request ID, numbers, the
model's names), and JSON escapes the rest, so a client cannot start a new log line."""

from __future__ import annotations

import logging
from typing import Any

from pythonjsonlogger.json import JsonFormatter

ACCESS = logging.getLogger("handlers.access")
JSON_FIELDS = "{levelname}{name}{message}"
RENAMED = {"levelname": "level", "name": "logger"}


def json_formatter() -> logging.Formatter:
    # timestamp=True: an ISO 8601 UTC "timestamp" key first
    return JsonFormatter(JSON_FIELDS, style="{", rename_fields=RENAMED, timestamp=True, json_ensure_ascii=True)


def use_format(log_format: str, root: logging.Logger | None = None) -> None:
    """Give the worker's root handlers (TorchServe's stdout handler) the configured format;
    text leaves TorchServe's own format alone."""
    if log_format != "json":
        return
    for handler in (root or logging.getLogger()).handlers:
        handler.setFormatter(json_formatter())


def access_line(fields: dict[str, Any], log_format: str) -> None:
    """One request's line: its fields as JSON keys, or ``key=value`` pairs in text."""
    if log_format == "json":
        ACCESS.info("request", extra=fields)
    else:
        ACCESS.info("request %s", " ".join(f"{k}={v}" for k, v in fields.items()))
