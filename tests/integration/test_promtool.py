"""The Prometheus files in serve_config/ pass promtool, and the promtool unit tests of every
rule (promtool/*.yml) pass. promtool comes with the Debian package `prometheus` that
`make test` installs: these tests fail, not skip, without it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import REPO
from tests.unit.test_prometheus_rules import PROMTOOL_TESTS, RULES, SERVE_CONFIG


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: run the tests through 'make test' (it installs prometheus)")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_prometheus_config_is_valid():
    out = promtool("check", "config", str(SERVE_CONFIG / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(RULES)} rule files found" in out.stdout + out.stderr


def test_rule_files_are_valid():
    assert len(RULES) >= 2
    out = promtool("check", "rules", *map(str, RULES))
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_pass():
    assert PROMTOOL_TESTS
    out = promtool("test", "rules", *map(str, PROMTOOL_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
