"""The container tier: the image built by ``make image``'s script and run by a real Docker
engine the tier starts itself (docker/engine.sh), the way an operator runs it.

The build runs once per session through the layer cache (only what changed is rebuilt); the
engine's data root lives outside the clone (/var/cache), so reruns and CI on the same machine
reuse the layers, while a fresh machine builds from nothing. Containers reach the tests on a
user network of the tier's own (their addresses are the tier's test hosts); nothing is
published beyond it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import MODEL_CONFIG

REPO = Path(__file__).resolve().parent.parent.parent
IMAGE = os.environ.get("TS_IMAGE", "torchserve-tabular:1.0")
# how the operator runs it (docs/deployment.md; compose and Kubernetes say the same)
RUN_DIR_TMPFS = "/app/.run:uid=10001,gid=10001,mode=0700,exec,size=512m"
TMP_TMPFS = "/tmp:uid=10001,gid=10001,mode=1777,size=64m"
OPERATOR_FLAGS = [
    "--read-only", "--tmpfs", RUN_DIR_TMPFS, "--tmpfs", TMP_TMPFS,
    "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
]
# The image's own HEALTHCHECK runs unchanged (every 15 s, 3 retries): a shorter interval would
# also shorten how long a restarting worker may take before the container counts as unhealthy.
ROW = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
MODEL = "tabular_classifier"


def poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Readiness with a deadline: ``check``'s first truthy value, or a failure naming ``what``."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"{what}: not within {timeout:g} s (last: {last!r})")


@dataclass
class Docker:
    env: dict[str, str]

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            pytest.fail(f"docker {' '.join(args)}: exit {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out

    def inspect(self, name: str) -> dict[str, Any]:
        return json.loads(self("inspect", name).stdout)[0]

    def address(self, name: str) -> str:
        networks = self.inspect(name)["NetworkSettings"]["Networks"]
        return next(iter(networks.values()))["IPAddress"]

    def health(self, name: str) -> str:
        state = self.inspect(name)["State"]
        return state["Health"]["Status"] if state["Running"] else "exited"

    def wait_healthy(self, name: str, timeout: float = 180) -> float:
        """Seconds until the HEALTHCHECK says healthy; fails at once if the container exits."""
        start = time.monotonic()

        def healthy() -> bool:
            status = self.health(name)
            if status == "exited":
                pytest.fail(f"{name} exited while starting:\n{self('logs', name, check=False).stderr[-3000:]}")
            return status == "healthy"

        poll(healthy, timeout, f"{name} healthy")
        return time.monotonic() - start

    def python(self, name: str, code: str) -> str:
        """Python inside the container (the image has no ps or curl): same user, no capabilities."""
        return self("exec", name, "python", "-c", code).stdout


def own_engine_running() -> bool:
    """Whether docker/engine.sh's own daemon runs (its pid file names a live process)."""
    pidfile = Path(os.environ.get("TS_DOCKER_STATE", "/run/torchserve-tabular-docker")) / "dockerd.pid"
    try:
        os.kill(int(pidfile.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    """The engine that answers, else the project's own, started here and stopped at the end
    (its data root, with the layer cache, stays for the next run)."""
    was_running = own_engine_running()
    engine = REPO / "docker" / "engine.sh"
    out = subprocess.run([str(engine), "env"], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        pytest.fail(out.stderr.strip() or "docker/engine.sh env failed")
    key, value = out.stdout.strip().split("=", 1)
    yield Docker({**os.environ, key: value})
    if not was_running and own_engine_running():
        subprocess.run([str(engine), "stop"], timeout=120, check=False)


@pytest.fixture(scope="session")
def image(docker: Docker) -> str:
    """make image's script: a cached rebuild takes seconds, a cold one some minutes."""
    start = time.monotonic()
    out = subprocess.run([str(REPO / "docker" / "build-image.sh"), IMAGE], env=docker.env, capture_output=True,
                         text=True, timeout=1800)
    if out.returncode != 0:
        pytest.fail(f"make image failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    print(f"\nimage {IMAGE} built in {time.monotonic() - start:.0f} s")
    return IMAGE


@pytest.fixture(scope="session")
def network(docker: Docker) -> Iterator[str]:
    name = f"ts-tier-{uuid.uuid4().hex[:8]}"
    docker("network", "create", name)
    yield name
    docker("network", "rm", name, check=False)


@pytest.fixture(scope="session")
def run(docker: Docker, image: str, network: str) -> Iterator[Callable[..., str]]:
    """Start a container of the image on the tier's network; each is removed at the end."""
    started: list[str] = []
    net = network

    def start(*flags: str, args: tuple[str, ...] = (), network: bool = True) -> str:
        """``network=False``: ``flags`` name the network (e.g. another container's namespace)."""
        name = f"ts-tier-{uuid.uuid4().hex[:8]}"
        docker("run", "-d", "--name", name, *(["--network", net] if network else []), *OPERATOR_FLAGS, *flags,
               image, *args)
        started.append(name)
        return name

    yield start
    for name in started:
        docker("rm", "-f", name, check=False)


def predict(address: str, rows: list[list[float]] | None = None, timeout: float = 30) -> requests.Response:
    return requests.post(f"http://{address}:8080/predictions/{MODEL}", json={"instances": rows or [ROW]}, timeout=timeout)


MIN_WORKERS = MODEL_CONFIG.min_workers
