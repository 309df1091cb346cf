"""The container's command, run outside a container against the repo's own files: the same
script, the same servectl command line and the container overlay, with free ports and a temp
run folder. It serves the model, binds as the image must, reports health, and stops on SIGTERM.

While it runs, inference and TorchServe's metrics listen on all interfaces (as in the
container) on random free ports; requests go to loopback only."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests
import torch

from servectl.config.settings import ServeSettings
from servectl.instance import processes
from servectl.waiting import wait_for
from tests.conftest import ANSWER_TIMEOUT, PROBABILITY_ATOL, free_ports
from tests.deploy.conftest import ENTRYPOINT, OVERLAY, REPO, SERVECTL_OVERLAY

ANY, LOOPBACK = "any", "loopback"


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def listening(port: int) -> set[str]:
    """How sockets listening on ``port`` are bound, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                if set(address) == {"0"}:
                    found.add(ANY)
                elif address.endswith("0100007F"):
                    found.add(LOOPBACK)
                else:
                    found.add(address)
    return found


@pytest.fixture(scope="module")
def entry(tmp_path_factory, built_card):
    run_dir = tmp_path_factory.mktemp("container_run")
    ports = free_ports(3)
    env = dict(
        os.environ,
        PATH=f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        RUN_DIR=str(run_dir),
        MODEL_NAME=built_card.model_name,
        HOME=str(run_dir),
    )
    port_args = ["--ports", ",".join(map(str, ports))]

    def health() -> int:
        return subprocess.run([str(ENTRYPOINT), "health", *port_args], env=env, capture_output=True, timeout=30).returncode

    settings = ServeSettings.load(built_card.model_name, overlay=OVERLAY, servectl_overlay=SERVECTL_OVERLAY, run_dir=run_dir).with_ports(*ports)
    assert health() == 1, "nothing runs yet: health must fail"
    with open(run_dir / "entrypoint.out", "wb") as out:
        proc = subprocess.Popen([str(ENTRYPOINT), "serve", *port_args], env=env, stdout=out, stderr=subprocess.STDOUT)
    def healthy() -> bool:
        assert proc.poll() is None, (run_dir / "entrypoint.out").read_text()[-3000:]
        return health() == 0

    try:
        wait_for(healthy, timeout=150, interval=0.5, what="the entry script's server to be READY (health 0)")
        yield proc, settings, health
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        processes.stop(settings)


def test_entry_script_serves_the_models_predictions(entry, built_card, built_model, test_split):
    _, settings, _ = entry
    rows = test_split["x"][:8]
    url = f"http://127.0.0.1:{settings.inference.port}/predictions/{built_card.model_name}"
    resp = requests.post(url, json={"instances": rows.tolist()}, timeout=ANSWER_TIMEOUT)
    assert resp.status_code == 200, resp.text
    got = torch.tensor([[p["probabilities"][c] for c in built_card.class_names] for p in resp.json()["predictions"]])
    with torch.inference_mode():
        assert torch.allclose(got, torch.softmax(built_model(rows), 1), atol=PROBABILITY_ATOL)


def test_binds_like_the_image_inference_and_metrics_open_management_on_loopback(entry):
    _, settings, _ = entry
    assert listening(settings.inference.port) == {ANY}
    assert listening(settings.metrics.port) == {ANY}
    assert listening(settings.management.port) == {LOOPBACK}


def test_sigterm_stops_server_and_workers_and_health_fails_after(entry):
    proc, settings, health = entry
    pid = processes.running_pid(settings)
    assert pid is not None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, "servectl exits cleanly on SIGTERM (docker stop, pod deletion)"
    # TorchServe's whole process group (frontend, workers) goes; servectl SIGKILLs stragglers,
    # whose exit (and reaping) may trail its own by a moment
    wait_for(lambda: group_gone(pid), timeout=10, what="TorchServe's process group to be gone")
    assert not listening(settings.inference.port) and not listening(settings.management.port)
    assert health() == 1
