"""docker/docker-compose.yml and the files it mounts, checked without a Docker engine."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
import yaml

from servectl.settings import ServeSettings
from tests.deploy.conftest import DOCKER, OVERLAY, REPO, dockerfile_instructions, exec_form

SERVE_CONFIG = REPO / "serve_config"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def test_the_four_services_with_pinned_images(services):
    assert set(services) == {"torchserve", "nginx", "prometheus", "grafana"}
    assert services["torchserve"]["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert (DOCKER / ".." / services["torchserve"]["build"]["dockerfile"]).resolve().is_file()
    for name in ("nginx", "prometheus", "grafana"):
        image = services[name]["image"]
        assert ":" in image and not image.endswith((":latest", ":main")) and any(c.isdigit() for c in image.split(":")[1])


def test_the_cpu_limit_is_workers_times_torch_threads(services):
    config = yaml.safe_load((SERVE_CONFIG / "model-config.yaml").read_text())
    torchserve = services["torchserve"]
    assert float(torchserve["deploy"]["resources"]["limits"]["cpus"]) == config["minWorkers"] * config["handler"]["torch_threads"]
    assert "OMP_NUM_THREADS" not in torchserve["environment"], "threads come from model-config.yaml"


def test_only_the_proxy_and_the_dashboards_are_published_and_only_on_loopback(services):
    assert "ports" not in services["torchserve"], "TorchServe is reached through nginx only"
    published = {name: s.get("ports", []) for name, s in services.items()}
    assert published["nginx"] == ["127.0.0.1:8080:8080"]
    for ports in published.values():
        for mapping in ports:
            assert mapping.startswith("127.0.0.1:"), mapping
            assert mapping.split(":")[-1] != "8081", "the management port is never published"


def test_every_service_has_a_health_check_and_startup_order_waits_for_it(services):
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
    runtime_health = next(a for i, a in dockerfile_instructions() if i == "HEALTHCHECK")
    assert services["torchserve"]["healthcheck"]["test"][1:] == exec_form(runtime_health)
    assert services["nginx"]["depends_on"] == {"torchserve": {"condition": "service_healthy", "restart": True}}
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert services["prometheus"]["depends_on"]["torchserve"]["condition"] in ("service_started", "service_healthy")


def mounts(service: dict) -> list[tuple[Path, str]]:
    """(host path resolved from docker/, container path) of each bind mount."""
    result = []
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith((".", "/")):
            result.append(((DOCKER / host).resolve(), container))
    return result


def test_every_mounted_file_exists_in_the_repo(services):
    found = [m for s in services.values() for m in mounts(s)]
    assert len(found) >= 4
    for host, container in found:
        assert host.exists(), f"{host} (mounted at {container}) is missing"
        assert REPO in host.parents, f"{host} is outside the repo"


def test_nginx_forwards_to_the_torchserve_service(services):
    env = services["nginx"]["environment"]
    assert env["TS_UPSTREAM"] == "torchserve:8080" and env["NGINX_PORT"] == "8080"
    assert (REPO / "docker/nginx/templates", "/etc/nginx/templates") in mounts(services["nginx"])


def test_container_overlay_opens_only_inference_and_metrics():
    settings = ServeSettings.load("tabular_classifier", overlay=OVERLAY)
    assert (settings.inference.host, settings.inference.port) == ("0.0.0.0", 8080)
    assert (settings.metrics.host, settings.metrics.port) == ("0.0.0.0", 8082)
    assert settings.management.host == "127.0.0.1"
    model_metrics = getattr(settings, "model_metrics", None)
    if model_metrics is not None:  # servectl's prometheus-client exporter
        assert (model_metrics.host, model_metrics.port) == ("0.0.0.0", 8083)
    base = ServeSettings.load("tabular_classifier")
    assert base.inference.host == "127.0.0.1", "without the overlay everything stays on loopback"


def prometheus_config(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_compose_prometheus_scrapes_both_endpoints_with_the_projects_jobs_and_rules(services):
    ours = prometheus_config(DOCKER / "prometheus" / "prometheus.yml")
    targets = sorted(t for job in ours["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"])
    assert targets == ["torchserve:8082", "torchserve:8083"]
    local_path = SERVE_CONFIG / "prometheus.yml"
    assert local_path.is_file(), "serve_config/prometheus.yml (observability) is missing"
    local = prometheus_config(local_path)
    # the same job names: the alert rules select on them
    assert sorted(j["job_name"] for j in ours["scrape_configs"]) == sorted(j["job_name"] for j in local["scrape_configs"])
    # the same rule files, as mounted (serve_config/ is at /etc/prometheus/serve_config)
    mount = dict((c, h) for h, c in mounts(services["prometheus"]))["/etc/prometheus/serve_config"]
    ours_rules = sorted(
        Path(p) for rule in ours["rule_files"]
        for p in glob.glob(str(mount / Path(rule).relative_to("/etc/prometheus/serve_config")))
    )
    local_rules = sorted(Path(p) for rule in local.get("rule_files", []) for p in glob.glob(str(local_path.parent / rule)))
    assert ours_rules and ours_rules == [p.resolve() for p in local_rules]


def test_grafana_datasource_is_the_one_the_dashboards_use(services):
    datasource = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["type"] == "prometheus"
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/dashboards.yml").read_text())["providers"][0]
    dashboards = dict((c, h) for h, c in mounts(services["grafana"]))[provider["options"]["path"]]
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
