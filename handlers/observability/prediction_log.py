"""The sampled prediction log: JSON lines of a request's rows and the model's answers, with its
request ID and model version, for audits and retraining. It holds user data (docs/observability.md).

Off unless ``handler.observability.prediction_log.sample_rate`` > 0 and a directory is set. Each
worker writes its own file (``predictions-<pid>.jsonl``: two processes rotating one file would lose
lines) through the stdlib's RotatingFileHandler, so the log is bounded to max_bytes x
(backup_count + 1) per worker. A write that fails (disk full, unwritable path) is counted in
``on_error`` (a warning metric) and the prediction is answered as usual.

``python -m handlers.observability.prediction_log to-csv DIR --out rows.csv`` turns the logs back
into the CSV ``make train DATA=rows.csv TARGET=label`` reads (model/data.py).
"""

from __future__ import annotations

import argparse
import csv
import logging
import logging.handlers
import os
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from handlers.settings import PredictionLogSettings

FILE_GLOB = "predictions-*.jsonl*"
LABEL = "label"


class _CountingHandler(logging.handlers.RotatingFileHandler):
    """Rotation as the stdlib does it; a failed write calls ``on_error`` instead of printing a
    traceback to the worker's stderr (which would be a log line per sampled request)."""

    on_error: Callable[[], None] = staticmethod(lambda: None)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self.on_error()


class PredictionLog:
    def __init__(self, filename: str | Path, settings: PredictionLogSettings, on_error: Callable[[], None]) -> None:
        self.rate = settings.sample_rate
        self.logger = logging.Logger(f"prediction_log.{os.getpid()}")  # not in the tree: never propagates
        self.on_error = on_error
        try:
            handler = _CountingHandler(filename, maxBytes=settings.max_bytes, backupCount=settings.backup_count,
                                       encoding="utf-8", delay=True)  # fmt: skip
        except OSError:  # e.g. a file where the directory should be
            on_error()
            self.logger.disabled = True
            return
        handler.on_error = on_error
        handler.setFormatter(logging.Formatter("%(message)s"))
        self.logger.addHandler(handler)

    def sampled(self) -> bool:
        return self.rate >= 1 or random.random() < self.rate

    def write(self, record: dict[str, Any]) -> None:
        """One JSON line; never raises (a failure is counted)."""
        if self.logger.disabled:
            self.on_error()
            return
        try:
            self.logger.info(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY).decode())
        except (OSError, TypeError, ValueError):  # encoding; OSError is handled inside logging
            self.on_error()


def open_log(settings: PredictionLogSettings, on_error: Callable[[], None]) -> PredictionLog | None:
    """This worker's log in the configured directory, or None when the log is off."""
    if not settings.enabled:
        return None
    directory = Path(settings.directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        on_error()  # the handler below fails too, and counts each write it cannot make
    return PredictionLog(directory / f"predictions-{os.getpid()}.jsonl", settings, on_error)


def read(directory: str | Path) -> Iterator[dict[str, Any]]:
    """Every record of every worker's log in ``directory`` (rotated files included)."""
    for path in sorted(Path(directory).glob(FILE_GLOB)):
        with open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    yield orjson.loads(line)


def to_csv(directory: str | Path, out: str | Path, target: str = LABEL) -> int:
    """The logged rows as a training CSV (feature columns + the model's label as ``target``):
    relabel it with the true classes before training on it, or the model learns its own answers."""
    n = 0
    with open(out, "w", newline="") as fh:
        writer: Any = None
        for record in read(directory):
            if writer is None:
                writer = csv.writer(fh)
                writer.writerow([*record["features"], target])
            for row, label in zip(record["rows"], record["labels"]):
                writer.writerow([*row, label])
                n += 1
    return n


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handlers.observability.prediction_log")
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("to-csv", help="the logged rows as a CSV for make train DATA=... TARGET=label")
    convert.add_argument("directory")
    convert.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    print(f"{to_csv(args.directory, args.out)} rows written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
