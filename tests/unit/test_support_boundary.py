"""Test support (tests/support/) is for the tests and the benchmarks: no product package imports it,
and no test imports the benchmarks' load generation any more (issue 22: load generation used by tests
lives in test support)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

PRODUCT = ["handlers", "servectl", "client", "model", "deploy", "offline", "checks"]


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_product_package_imports_test_support():
    offenders = [
        f"{path.relative_to(REPO)}: {name}"
        for package in PRODUCT
        for path in sorted((REPO / package).rglob("*.py"))
        for name in imported(path)
        if name == "tests" or name.startswith("tests.")
    ]
    assert offenders == []


def test_the_tests_take_load_generation_from_test_support_not_benchmarks():
    moved = ("benchmarks.loadmix", "benchmarks.lifecycle", "benchmarks.otlp_receiver")
    offenders = [
        f"{path.relative_to(REPO)}: {name}"
        for path in sorted((REPO / "tests").rglob("*.py"))
        for name in imported(path)
        if name in moved
    ]
    assert offenders == []
