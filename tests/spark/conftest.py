"""The Spark tier: one local Spark session for the whole tier (its JVM start is most of the
tier's time), and the live TorchServe of the integration tier, whose answers the job must give."""

from __future__ import annotations

import importlib.util

import pytest

from tests.integration.conftest import live, predict_url  # noqa: F401 (fixtures: the same server start)

# pyspark comes with the spark lock only (make test-spark and make test install it): without it
# this tier is not collected, so `make test-unit` on a fresh venv still collects cleanly
collect_ignore_glob = [] if importlib.util.find_spec("pyspark") else ["test_*.py"]


@pytest.fixture(scope="session")
def spark():
    """local[2]: two task slots, as two executors of one core each would run the job."""
    from offline.spark import session

    spark = session("local[2]", app="tabular-score-tests")
    spark.sparkContext.setLogLevel("ERROR")
    yield spark
    spark.stop()
