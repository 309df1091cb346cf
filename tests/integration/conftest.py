"""A real TorchServe started from the built .mar on free loopback ports, once per session,
and always torn down."""

from __future__ import annotations

import pytest
import requests

from benchmarks.report import metric_sums
from servectl import server
from servectl.settings import ServeSettings
from tests.conftest import free_ports


@pytest.fixture(scope="session")
def live(built_card, tmp_path_factory) -> ServeSettings:
    run_dir = tmp_path_factory.mktemp("torchserve")
    settings = ServeSettings.load(built_card.model_name, run_dir=run_dir).with_ports(*free_ports(3))
    with open(run_dir / "torchserve.out", "ab") as out:
        proc = server.start(settings, stdout=out)
    try:
        server.wait_ready(settings, timeout=120, alive=lambda: proc.poll() is None)
        yield settings
    finally:
        server.stop(settings)


@pytest.fixture(scope="session")
def predict_url(live, built_card) -> str:
    return f"{live.inference.url}/predictions/{built_card.model_name}"


def workers(settings: ServeSettings) -> list[tuple[int, str]]:
    """(pid, start time) of each worker: a restart changes them."""
    status = server.model_status(settings)
    return sorted((w["pid"], w["startTime"]) for w in status["workers"])


def frontend_metric(settings: ServeSettings, name: str) -> float:
    """Sum of one TorchServe Prometheus metric over its label sets (0 when absent)."""
    text = requests.get(f"{settings.metrics.url}/metrics", timeout=5).text
    return metric_sums(text, [name])[name]
