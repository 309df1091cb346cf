"""The end-to-end tier's shared fixture: a copy of the repo to run the Makefile in (its
artifacts/ and model_store/ change), with free ports, its server always stopped."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, free_ports


def copy_of_repo(dst: Path) -> Path:
    """The tracked files, the built model and the build stamps, and the venv by symlink."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (REPO / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dst / name)
    for folder in ("artifacts", "model_store"):
        shutil.copytree(REPO / folder, dst / folder)
    shutil.copy2(REPO / "model_store.sha256", dst / "model_store.sha256")  # servectl.store.digests' record
    (dst / "build").mkdir()
    for stamp in (REPO / "build").glob("*.params"):
        shutil.copy2(stamp, dst / "build" / stamp.name)
    for stamp in (REPO / "build").glob("last-build.mk"):
        shutil.copy2(stamp, dst / "build" / stamp.name)
    os.symlink(REPO / ".venv", dst / ".venv")
    return dst


@pytest.fixture
def repo(tmp_path) -> Iterator[tuple[Path, str, list[int]]]:
    copy = copy_of_repo(tmp_path / "repo")
    ports = free_ports(4)
    serve_args = f"SERVE_ARGS=--run-dir {tmp_path / 'run'} --ports {','.join(map(str, ports))}"
    try:
        yield copy, serve_args, ports
    finally:
        subprocess.run(["make", "-s", "stop", serve_args], cwd=copy, capture_output=True, timeout=120)
