"""make image without what it needs: each missing piece stops the build at once with one line
naming it (the engine, the network, the torch wheel), and compose without an engine too."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.container.conftest import REPO, Docker

TOOLS = ("sh", "id", "timeout", "mkdir", "date", "sleep", "cat", "kill", "rm", "setsid", "dirname", "sed", "find",
         "ln", "cp", "cmp", "python3", "env", "tr", "cut", "make")


def make(target: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", target, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def last_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in out.stderr.splitlines() if not line.startswith("make")]
    return lines[-1] if lines else ""


@pytest.fixture
def without_docker(tmp_path: Path) -> dict[str, str]:
    """A PATH with the shell tools and no docker or dockerd, and no engine state of ours."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    return {**env, "PATH": str(bin_dir), "TS_DOCKER_STATE": str(tmp_path / "state"),
            "DOCKER_HOST": f"unix://{tmp_path}/none.sock"}


def test_no_engine(without_docker):
    out = make("image", without_docker)
    assert out.returncode != 0
    assert last_line(out) == "no Docker engine: the docker CLI is not installed (apt-get install docker.io)"


@pytest.mark.parametrize("target", ["compose-up", "compose-down"])
def test_compose_without_an_engine(without_docker, target):
    out = make(target, without_docker, "-o", "image", "-o", ".venv/.deploy-tools")
    assert out.returncode != 0
    assert last_line(out).startswith("no Docker engine:"), out.stderr


def test_no_network(docker: Docker):
    out = make("image", {**docker.env, "PYPI_URL": "http://127.0.0.1:9/simple"})
    assert out.returncode != 0
    assert last_line(out) == "no network: http://127.0.0.1:9/simple does not answer (the build installs the locked packages from it)"


def test_no_torch_wheel(docker: Docker, tmp_path):
    out = make("image", {**docker.env, "PIP_FIND_LINKS": str(tmp_path), "TORCH_INDEX_URL": "http://127.0.0.1:9/cpu"})
    assert out.returncode != 0
    assert last_line(out).startswith("no torch wheel: torch==2.13.0+cpu is not in pip's find-links"), out.stderr
