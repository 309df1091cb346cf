"""Helpers of the tiers that drive a live TorchServe. The server itself (``live``, started from
the built .mar once per session and always torn down) is in tests/conftest.py, so the integration
and Spark tiers share one server in a whole-suite run."""

from __future__ import annotations

import requests

from common.prometheus import metric_sums
from servectl.config.settings import ServeSettings
from servectl.instance import readiness


def workers(settings: ServeSettings) -> list[tuple[int, str]]:
    """(pid, start time) of each worker: a restart changes them."""
    status = readiness.model_status(settings)
    return sorted((w["pid"], w["startTime"]) for w in status["workers"])


def frontend_metric(settings: ServeSettings, name: str) -> float:
    """Sum of one TorchServe Prometheus metric over its label sets (0 when absent)."""
    text = requests.get(f"{settings.metrics.url}/metrics", timeout=5).text
    return metric_sums(text, [name])[name]
