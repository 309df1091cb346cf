"""The Spark tier: one local Spark session for the whole tier (its JVM start is most of the
tier's time); ``live`` (tests/conftest.py) is the TorchServe whose answers the job must give,
the integration tier's server in a whole-suite run."""

from __future__ import annotations

import importlib.util

import pytest

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
