"""Two lines TorchServe's worker writes for every batch, dropped: each is written by the worker,
then read and parsed by the frontend, on every batch. A module of its own because TorchServe
loads a handler module only when it defines exactly one class."""

from __future__ import annotations

import logging


class DropLine(logging.Filter):
    """Drops the log records whose message starts with ``prefix``; every other line, errors
    included, still goes out."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(self.prefix))


# TorchServe's per-batch "Backend received inference at" INFO line: the frontend reads every
# worker line and writes it to model_log, which costs both processes CPU on each batch
# (benchmarks/README.md).
PER_BATCH_LINE = DropLine("Backend received inference")
# TorchServe's per-batch [METRICS]PredictionTime line (ts/service.py): its write, and the
# frontend's reading and parsing of it, were ~6% of a worker's busy time on bulk requests
# (py-spy), for a gauge of the last batch's time that the handler's own handler_seconds
# histogram holds in full (docs/metrics.md).
PREDICTION_TIME_LINE = DropLine("[METRICS]PredictionTime")


def install() -> None:
    """The filters on the loggers that write those lines (adding one twice keeps one)."""
    logging.getLogger().addFilter(PER_BATCH_LINE)  # ts/protocol/otf_message_handler.py logs on the root
    logging.getLogger("ts.metrics.caching_metric").addFilter(PREDICTION_TIME_LINE)
