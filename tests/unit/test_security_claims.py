"""The claims docs/security.md makes about why a known vulnerability does not reach this
service, each checked against what is installed, shipped or called."""

from __future__ import annotations

import ast
from importlib.metadata import distribution
from pathlib import Path

from checks.audit import accepted
from tests.conftest import REPO
from tests.deploy.test_docker import stages

SERVING_CODE = ("common", "handlers", "servectl")  # what runs in TorchServe's workers and beside it


def calls(folder: Path) -> set[str]:
    """Every dotted call target in the folder's Python files (``torch.jit.script``, ...)."""
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                found.add(ast.unparse(node.func))
            elif isinstance(node, ast.Attribute) and node.attr == "script":  # also a decorator or a reference
                found.add(ast.unparse(node))
    return found


def test_the_serving_code_never_scripts_a_model():
    """CVE-2025-3000 is in torch.jit.script: only model/ (build time, on our own network) calls it."""
    for folder in SERVING_CODE:
        scripted = {c for c in calls(REPO / folder) if c.endswith("jit.script") or c == "script"}
        assert not scripted, f"{folder}/ calls {scripted}"
    assert "torch.jit.script" in calls(REPO / "model"), "the check looks for the name model/ really uses"


def test_no_torchserve_benchmark_script_is_installed():
    """CVE-2024-6577 is in TorchServe's benchmark script: the wheel ships none (the image's venv is
    built from the same requirements-serve.lock pin)."""
    files = [str(f) for f in distribution("torchserve").files or []]
    assert any(f.endswith("model-server.jar") for f in files), "not the torchserve wheel's file list"
    assert [f for f in files if "benchmark" in f.lower()] == []


def test_the_image_ships_no_benchmarks():
    """Nor does the image carry this project's own benchmarks/ (or the build stage's tools)."""
    runtime = dict(stages())["runtime"]
    sources = [a.split()[1] for i, a in runtime if i == "COPY"]
    assert sources and not [s for s in sources if "bench" in s], sources


def test_each_accepted_finding_gives_its_reason():
    """The audit accepts exactly the table's IDs; each row names a package and a reason."""
    ids = accepted()
    assert {"CVE-2025-3000", "CVE-2024-6577"} <= set(ids)
    text = (REPO / "docs" / "security.md").read_text()
    for vuln in ids:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{vuln}` |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 4 and all(cells), row
