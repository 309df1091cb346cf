"""End to end through the Makefile, as a user runs it: serve-bg, the README's curl, stop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading

import psutil
import pytest

from servectl.config.settings import ServeSettings
from servectl.instance.processes import running_pid
from servectl.waiting import wait_for
from tests.conftest import ANSWER_TIMEOUT, REPO, SHIPPED, free_ports


def make(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def torchserve_pid(run_dir) -> int | None:
    """The pid of the run folder's TorchServe (servectl finds it by its config path; no PID file)."""
    return running_pid(ServeSettings.load("tabular_classifier", run_dir=run_dir))


def readme_curl() -> str:
    """The README's first prediction example, exactly as written there."""
    text = (REPO / "README.md").read_text()
    match = re.search(rf"^curl -s {re.escape(SHIPPED.inference.url)}/predictions/\S+ .*$", text, re.M)
    assert match, "README has no curl prediction example"
    return match.group(0)


@pytest.fixture
def served(tmp_path):
    ports = free_ports(3)
    serve_args = f"SERVE_ARGS=--run-dir {tmp_path} --ports {','.join(map(str, ports))}"
    result = make("serve-bg", serve_args)
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield ports, serve_args, tmp_path, result.stdout
    finally:
        make("stop", serve_args)


def test_serve_bg_readme_curl_and_stop(served, built_card):
    ports, serve_args, run_dir, banner = served
    assert "is READY" in banner and f"127.0.0.1:{ports[0]}/predictions/{built_card.model_name}" in banner

    command = readme_curl().replace(SHIPPED.inference.url, f"http://127.0.0.1:{ports[0]}")
    out = subprocess.run(
        ["bash", "-c", command + " -w '\\n%{http_code}'"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=ANSWER_TIMEOUT,
    )
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "200", out.stdout + out.stderr
    for prediction in json.loads(body)["predictions"]:
        assert set(prediction["probabilities"]) == set(built_card.class_names)
        assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-5

    assert make("token", serve_args).stdout == ""  # token auth is off by default

    pid = torchserve_pid(run_dir)
    group = [p for p in psutil.process_iter() if _pgid(p.pid) == pid]
    assert len(group) >= 3  # torchserve CLI, java frontend, workers
    assert make("stop", serve_args).returncode == 0
    wait_for(lambda: not alive(group), timeout=10, what="no process left behind after make stop")


def test_stop_without_a_server_is_harmless(tmp_path):
    result = make("stop", f"SERVE_ARGS=--run-dir {tmp_path}")
    assert result.returncode == 0 and "no server" in result.stdout


def alive(group: list[psutil.Process]) -> list[psutil.Process]:
    """The processes of ``group`` still running (a zombie has exited)."""
    running = []
    for p in group:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                running.append(p)
        except psutil.NoSuchProcess:
            continue
    return running


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_make_serve_in_the_foreground_stops_cleanly_on_ctrl_c(tmp_path):
    """Ctrl-C reaches make and servectl (the terminal's process group); TorchServe, in its
    own session, must still be stopped with its workers."""
    ports = free_ports(3)
    proc = subprocess.Popen(
        ["make", "-s", "serve", f"SERVE_ARGS=--run-dir {tmp_path} --ports {','.join(map(str, ports))}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        # as in a terminal: a shell that started the suite in the background (`bash .ci/run &`)
        # leaves SIGINT ignored, which make and servectl would inherit
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines = []
        for line in proc.stdout:  # bounded by the READY deadline inside servectl
            lines.append(line)
            if "Ctrl-C stops the server" in line:
                break
        assert any("is READY" in line for line in lines), "".join(lines)
        # keep reading, as a terminal does: TorchServe logs to this pipe too, and a full pipe
        # would block its shutdown and servectl's exit (seen once in a fresh-clone run)
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        ts_pid = torchserve_pid(tmp_path)
        group = [p for p in psutil.process_iter() if _pgid(p.pid) == ts_pid]
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) in (0, 2, -signal.SIGINT)
        wait_for(lambda: not alive(group), timeout=10, what="TorchServe and its workers to exit after Ctrl-C")
        assert torchserve_pid(tmp_path) is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        make("stop", f"SERVE_ARGS=--run-dir {tmp_path}")


def test_targets_do_nothing_when_up_to_date():
    assert make("archive").returncode == 0  # brings everything up to date
    outputs = [REPO / p for p in ("artifacts/checkpoint.pt", "artifacts/metadata.json", "model_store")]
    outputs.append(next((REPO / "model_store").glob("*.mar")))
    before = [p.stat().st_mtime_ns for p in outputs]
    again = make("archive")
    assert again.returncode == 0 and again.stdout == "", again.stdout
    assert [p.stat().st_mtime_ns for p in outputs] == before
