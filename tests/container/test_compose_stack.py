"""The compose stack for real (make compose-up's script): two TorchServe replicas behind nginx,
Prometheus scraping each replica, and under steady load through nginx a killed replica and a
rolling update to a new image, each with zero failed client requests.

Its own project name and free loopback ports, so it runs beside a `make serve` on 8080."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from servectl.config.settings import free_loopback_ports
from tests.container.conftest import MODEL, REPO, ROW, Docker, poll

REPLICAS = ("torchserve-a", "torchserve-b")
DASHBOARDS = REPO / "serve_config" / "grafana" / "dashboards"


def dashboard_queries() -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(DASHBOARDS.glob("*.json")):
        walk(json.loads(path.read_text()))
    return found


class Stack:
    def __init__(self, docker: Docker) -> None:
        proxy, prometheus = free_loopback_ports(2)
        self.project = f"ts-tier-{uuid.uuid4().hex[:6]}"
        self.env = {**docker.env, "COMPOSE_PROJECT_NAME": self.project, "PROXY_PORT": str(proxy),
                    "PROMETHEUS_PORT": str(prometheus)}
        self.proxy = f"http://127.0.0.1:{proxy}"
        self.prometheus = f"http://127.0.0.1:{prometheus}"
        self.docker = docker

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([str(REPO / "docker" / "compose.sh"), *args], env=self.env, capture_output=True,
                             text=True, timeout=timeout)
        if out.returncode != 0:
            logs = subprocess.run([str(REPO / "docker" / "compose.sh"), "logs", "--tail", "40"], env=self.env,
                                  capture_output=True, text=True, timeout=60).stdout
            pytest.fail(f"compose.sh {' '.join(args)}: exit {out.returncode}\n{out.stdout}\n{out.stderr}\n{logs[-6000:]}")
        return out

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def image_of(self, service: str) -> str:
        return self.docker.inspect(self.container(service))["Config"]["Image"]


@pytest.fixture(scope="module")
def stack(docker: Docker, image: str) -> Iterator[Stack]:
    s = Stack(docker)
    start = time.monotonic()
    s.compose("up")
    print(f"\ncompose up (both replicas healthy, nginx and Prometheus ready) in {time.monotonic() - start:.0f} s")
    yield s
    s.compose("down", "-v", "--remove-orphans")


class Load:
    """Steady load through nginx from a few threads; every answer counted by status."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url, self.stop, self.counts = url, threading.Event(), Counter[str]()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.send) for _ in range(threads)]

    def send(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            try:
                code = str(session.post(f"{self.url}/predictions/{MODEL}", json={"instances": [ROW]}, timeout=60).status_code)
            except requests.RequestException as exc:
                code = type(exc).__name__
            with self.lock:
                self.counts[code] += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def test_prometheus_scrapes_every_replica_with_its_own_instance_label(stack):
    def up() -> dict[str, set[str]] | None:
        resp = requests.get(f"{stack.prometheus}/api/v1/query", params={"query": "up == 1"}, timeout=10).json()
        found: dict[str, set[str]] = {}
        for series in resp["data"]["result"]:
            found.setdefault(series["metric"]["job"], set()).add(series["metric"]["instance"])
        want = {"torchserve": {f"{r}:8082" for r in REPLICAS}, "model_exporter": {f"{r}:8083" for r in REPLICAS}}
        return found if all(found.get(job) == inst for job, inst in want.items()) else None

    poll(up, 90, "Prometheus scraping both replicas on both ports", interval=1)


def test_a_killed_replica_loses_no_client_request(stack):
    victim = stack.container("torchserve-a")
    with Load(stack.proxy) as load:
        time.sleep(3)  # steady load before the fault
        # SIGKILL to the replica's PID 1 from the host: a crash, not `docker kill` (which docker
        # counts as a manual stop and never restarts); the restart policy (unless-stopped)
        # brings it back, and until then nginx sends to the other replica
        os.kill(stack.docker.inspect(victim)["State"]["Pid"], 9)
        poll(lambda: stack.docker.inspect(victim)["RestartCount"] >= 1, 60, "docker restarting the replica")
        poll(lambda: stack.docker.health(victim) == "healthy", 180, "the killed replica healthy again", interval=1)
        time.sleep(3)
    print(f"\nkilled replica under load: {dict(load.counts)}")
    assert set(load.counts) == {"200"} and load.counts["200"] > 50, dict(load.counts)


def test_a_rolling_update_to_a_new_image_loses_no_client_request(stack, image, tmp_path):
    new = f"{image}-rollout-{uuid.uuid4().hex[:6]}"
    (tmp_path / "Dockerfile").write_text(f"FROM {image}\nLABEL org.opencontainers.image.revision=rollout-test\n")
    stack.docker("build", "-q", "-t", new, str(tmp_path))
    try:
        with Load(stack.proxy) as load:
            time.sleep(3)
            start = time.monotonic()
            stack.compose("rollout", new)
            took = time.monotonic() - start
            time.sleep(3)
        print(f"\nrolling update in {took:.0f} s under load: {dict(load.counts)}")
        assert [stack.image_of(r) for r in REPLICAS] == [new, new]
        assert set(load.counts) == {"200"} and load.counts["200"] > 50, dict(load.counts)
    finally:
        os.environ.get("KEEP_IMAGES") or stack.docker("rmi", "-f", new, check=False)


def test_every_dashboard_query_answers_and_every_metric_it_reads_comes_from_each_replica(stack):
    """Grafana cannot run here: its dashboards' queries run against the stack's Prometheus
    instead (after the load above, with Grafana's variables at "All" and a 1 m rate interval).
    Each must evaluate; each raw metric they read that has series must have them from both
    replicas, under each replica's own `instance` label."""
    queries = dashboard_queries()
    assert len(queries) > 20

    def query(expr: str) -> list[dict]:
        resp = requests.get(f"{stack.prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert resp["status"] == "success", (expr, resp)
        return resp["data"]["result"]

    for expr in queries:
        query(expr.replace("$model", ".*").replace("$__rate_interval", "1m"))
    metrics = {m for e in queries for m in re.findall(r"(?<![:\w])([a-zA-Z_][a-zA-Z0-9_]*)\{", e) if m != "ALERTS"}
    # traffic through nginx reaches both replicas (it takes them in turn); then every series a
    # replica has appears once Prometheus scraped it
    session = requests.Session()
    for _ in range(100):
        assert session.post(f"{stack.proxy}/predictions/{MODEL}", json={"instances": [ROW]}, timeout=30).status_code == 200

    def per_replica() -> dict[str, set[str]] | None:
        seen = {}
        for metric in sorted(metrics):
            instances = {r["metric"].get("instance", "").split(":")[0] for r in query(f"count by (instance) ({metric})")}
            if instances:
                seen[metric] = instances
        complete = all(instances == set(REPLICAS) for instances in seen.values())
        return seen if complete else None

    seen = poll(per_replica, 60, "every dashboard metric from both replicas", interval=2)
    assert {"tabular_requests_total", "ts_inference_requests_total", "tabular_workers"} <= set(seen), seen
    print(f"\n{len(queries)} dashboard queries answer; {len(seen)} metrics they read come from both replicas")
