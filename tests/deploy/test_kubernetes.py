"""deploy/: the core resources against Kubernetes' own schemas (kubernetes-validate, offline),
the custom resources (ServiceMonitor, InferenceService) structurally, and the KServe layout."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from deploy.kserve.layout import lay_out
from servectl.config.settings import ServeSettings, read_properties
from servectl.metrics import monitor
from tests.conftest import MODEL_CONFIG
from tests.deploy.conftest import (
    KUBERNETES,
    OVERLAY,
    REPO,
    SERVECTL_OVERLAY,
    dockerfile_instructions,
    exec_form,
    load_yaml_docs,
)

K8S_VERSION = "1.33.0"  # validate against a released, widely deployed version
CORE_KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap"}


@pytest.fixture(scope="module")
def resources() -> dict[str, dict]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    on_disk = sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk, "kustomization.yaml lists every manifest, and only those"
    docs = [doc for name in listed for doc in load_yaml_docs(KUBERNETES / name)]
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs)
    return by_kind


def test_core_resources_validate_strictly(resources):
    import kubernetes_validate  # deploy tools only (make deploy-tools): the unit tier still collects this module

    assert CORE_KINDS <= set(resources)
    for kind in CORE_KINDS:
        kubernetes_validate.validate(resources[kind], K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_deployment(resources):
    import kubernetes_validate

    broken = copy.deepcopy(resources["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # typo of resources
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def containers(resources) -> dict[str, dict]:
    found = resources["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in found] == ["proxy", "torchserve"], "the proxy sidecar in front of TorchServe"
    return {c["name"]: c for c in found}


def container(resources) -> dict:
    return containers(resources)["torchserve"]


def test_probes_readiness_is_model_ready_liveness_is_the_frontend(resources):
    c = container(resources)
    health = exec_form(next(a for i, a in dockerfile_instructions() if i == "HEALTHCHECK"))
    assert c["readinessProbe"]["exec"]["command"] == health
    assert c["startupProbe"]["exec"]["command"] == health
    # inference is on the pod's loopback: the frontend's metrics port says it answers
    assert c["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "ts-metrics"}


def pod_settings(resources) -> ServeSettings:
    """What servectl serves in the pod: the image's overlay plus the manifest's arguments."""
    args = container(resources)["args"]
    assert args[0] == "serve" and len(args) % 2 == 1
    settings = ServeSettings.load("m", overlay=OVERLAY, servectl_overlay=SERVECTL_OVERLAY)
    assert set(args[1::2]) == {"--set"}
    sets = dict(value.split("=", 1) for value in args[2::2])
    return settings.with_properties(**sets)


def test_torchserve_listens_for_inference_on_loopback_only_behind_the_proxy(resources):
    settings = pod_settings(resources)
    assert settings.inference.host == "127.0.0.1" and settings.management.host == "127.0.0.1"
    proxy = {e["name"]: e["value"] for e in containers(resources)["proxy"]["env"]}
    assert proxy["TS_UPSTREAM"] == f"{settings.inference.host}:{settings.inference.port}"
    assert proxy["NGINX_PORT"] == "8080"
    compose = yaml.safe_load((REPO / "docker/docker-compose.yml").read_text())
    assert containers(resources)["proxy"]["image"] == compose["services"]["nginx"]["image"].split(":-", 1)[1].rstrip("}")


def test_ports_are_the_proxy_and_metrics_and_never_management(resources):
    settings = pod_settings(resources)
    ports = {p["name"]: p["containerPort"] for c in containers(resources).values() for p in c["ports"]}
    assert ports == {"http": 8080, "ts-metrics": settings.metrics.port, "model-metrics": settings.model_metrics.port}
    service_ports = {p["name"]: p["targetPort"] for p in resources["Service"]["spec"]["ports"]}
    assert set(service_ports.values()) <= set(ports), "the Service targets the containers' named ports"
    published = {p["port"] for p in resources["Service"]["spec"]["ports"]}
    assert settings.management.port not in published and settings.inference.port not in published


def test_the_network_policy_admits_only_prometheus_to_the_metric_ports(resources):
    policy = resources["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= resources["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    open_rule, metrics_rule = policy["ingress"]
    assert "from" not in open_rule and [p["port"] for p in open_rule["ports"]] == ["http"]
    assert [p["port"] for p in metrics_rule["ports"]] == ["ts-metrics", "model-metrics"]
    assert metrics_rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


def test_the_proxy_configmap_is_the_template():
    from deploy import proxy_config

    assert proxy_config.main(["--check"]) == 0, "run 'make k8s-proxy-config'"
    (doc,) = load_yaml_docs(KUBERNETES / "proxy-configmap.yaml")
    assert doc["data"]["default.conf.template"] == (REPO / "docker/nginx/templates/default.conf.template").read_text()


def test_the_proxy_sidecar_is_hardened_and_renders_into_writable_mounts(resources):
    proxy = containers(resources)["proxy"]
    assert proxy["securityContext"]["readOnlyRootFilesystem"] is True
    assert proxy["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in proxy["volumeMounts"]}
    assert mounts["/etc/nginx/templates"] == "proxy-template"
    volumes = {v["name"]: v for v in resources["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["proxy-template"]["configMap"]["name"] == resources["ConfigMap"]["metadata"]["name"]


def test_the_kserve_custom_predictor_is_the_same_pod(resources):
    (isvc,) = load_yaml_docs(REPO / "deploy/kserve/inferenceservice-custom.yaml")
    predictor = isvc["spec"]["predictor"]
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    ours = copy.deepcopy(pod["containers"])
    ours[0]["name"] = "kserve-container"  # KServe routes to its first container: the proxy
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    ours[1]["image"] = f"{ours[1]['image']}:{kustomization['images'][0]['newTag']}"
    assert predictor["containers"] == ours
    for key in ("volumes", "securityContext", "terminationGracePeriodSeconds", "automountServiceAccountToken"):
        assert predictor[key] == pod[key], key
    assert predictor["minReplicas"] >= 2


def cpus_for_the_model() -> int:
    """minWorkers x handler.torch_threads: the one place threads per worker are set."""
    return MODEL_CONFIG.min_workers * MODEL_CONFIG.torch_threads


def test_the_cpu_limit_is_workers_times_torch_threads(resources):
    c = container(resources)
    limits, requests = c["resources"]["limits"], c["resources"]["requests"]
    assert requests == limits, "Guaranteed QoS"
    assert int(limits["cpu"]) == cpus_for_the_model()
    assert "OMP_NUM_THREADS" not in {e["name"] for e in c.get("env", [])}, "threads come from model-config.yaml"


def test_the_kserve_cpu_limit_is_workers_times_torch_threads():
    (isvc,) = load_yaml_docs(REPO / "deploy/kserve/inferenceservice.yaml")
    model = isvc["spec"]["predictor"]["model"]
    assert int(model["resources"]["limits"]["cpu"]) == cpus_for_the_model()
    assert "OMP_NUM_THREADS" not in {e["name"] for e in model.get("env", [])}


def test_hardened_pod_with_writable_run_dir(resources):
    spec = resources["Deployment"]["spec"]["template"]["spec"]
    c = container(resources)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/app/.run", "/tmp"}


def test_scaling_objects_target_the_deployment(resources):
    deployment = resources["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = resources["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    assert resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert resources["Service"]["spec"]["selector"].items() <= labels.items()


def test_service_monitor_scrapes_both_metric_endpoints(resources):
    monitor = resources["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = resources["Service"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    scraped = {e["port"] for e in monitor["spec"]["endpoints"]}
    assert scraped == {"ts-metrics", "model-metrics"}
    assert scraped <= {p["name"] for p in service["spec"]["ports"]}


def test_service_monitor_jobs_are_the_ones_the_rules_select_on(resources):
    """serve_config/prometheus.yml names a job per metrics port; the alert rules use those names."""
    local = yaml.safe_load((REPO / "serve_config/prometheus.yml").read_text())
    container = ServeSettings.load("m", overlay=OVERLAY, servectl_overlay=SERVECTL_OVERLAY)
    job_by_port = {getattr(container, monitor.JOBS[job["job_name"]]).port: job["job_name"] for job in local["scrape_configs"]}
    port_numbers = {p["name"]: p["port"] for p in resources["Service"]["spec"]["ports"]}
    for endpoint in resources["ServiceMonitor"]["spec"]["endpoints"]:
        (relabel,) = [r for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
        assert relabel["replacement"] == job_by_port[port_numbers[endpoint["port"]]]


def test_kustomize_image_matches_the_container(resources):
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert container(resources)["image"] in {i["name"] for i in kustomization["images"]}


def test_kserve_inference_service_uses_the_torchserve_runtime():
    docs = load_yaml_docs(REPO / "deploy/kserve/inferenceservice.yaml")
    assert [d["kind"] for d in docs] == ["InferenceService"]
    isvc = docs[0]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "pytorch" and model["runtime"] == "kserve-torchserve"
    assert model["storageUri"]
    text = (REPO / "deploy/kserve/inferenceservice.yaml").read_text()
    assert "phasing out" in text


def test_kserve_layout_from_the_built_mar(tmp_path, built_card):
    out = lay_out(tmp_path / "kserve")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "config/config.properties",
        f"model-store/{built_card.model_name}.mar",
    ]
    assert (out / "model-store" / f"{built_card.model_name}.mar").read_bytes() == (
        REPO / "model_store" / f"{built_card.model_name}.mar"
    ).read_bytes()
    props = read_properties(out / "config" / "config.properties")
    assert props["model_store"] == "/mnt/models/model-store"
    assert props["inference_address"] == "http://0.0.0.0:8085"
    assert props["management_address"].startswith("http://127.0.0.1:")
    assert props["disable_token_authorization"] == "true" and props["enable_model_api"] == "false"
    snapshot = json.loads(props["model_snapshot"])
    version = snapshot["models"][built_card.model_name][built_card.version]
    assert version["marName"] == f"{built_card.model_name}.mar" and version["defaultVersion"] is True


# What a deployment's memory limit must hold, beside the JVM heap (-Xmx in vmargs) and Netty's
# direct buffers (bounded by the heap's size by default): the JVM's own code, metaspace and
# stacks, each Python worker (torch and the model: ~250 MiB measured in make bench), and the
# model-metrics exporter (~31 MiB). Budgets with headroom, not measurements.
JVM_OVERHEAD_MIB = 256
WORKER_MIB = 512
EXPORTER_MIB = 128


def mebibytes(quantity: str) -> int:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "k": 1 / 1024, "m": 1, "g": 1024, "M": 1, "G": 1024}
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return int(float(quantity[: -len(unit)]) * factor)
    return int(quantity) // 2**20


def jvm_heap_mib() -> int:
    vmargs = read_properties(REPO / "serve_config/config.properties")["vmargs"].split()
    (xmx,) = [a for a in vmargs if a.startswith("-Xmx")]
    return mebibytes(xmx[4:])


def memory_needed_mib() -> int:
    return 2 * jvm_heap_mib() + JVM_OVERHEAD_MIB + MODEL_CONFIG.min_workers * WORKER_MIB + EXPORTER_MIB


def test_the_memory_limit_covers_the_jvm_and_the_workers(resources):
    """The JVM heap is bounded (vmargs) and every deployment's limit holds the whole service,
    so the heap, not the kernel's OOM killer, is what bounds the frontend."""
    (isvc,) = load_yaml_docs(REPO / "deploy/kserve/inferenceservice.yaml")
    compose = yaml.safe_load((REPO / "docker/docker-compose.yml").read_text())
    limits = {
        "kubernetes": container(resources)["resources"]["limits"]["memory"],
        "kserve": isvc["spec"]["predictor"]["model"]["resources"]["limits"]["memory"],
        "compose": compose["services"]["torchserve-a"]["deploy"]["resources"]["limits"]["memory"],
    }
    assert len({mebibytes(v) for v in limits.values()}) == 1, f"one memory limit everywhere: {limits}"
    for where, limit in limits.items():
        assert mebibytes(limit) >= memory_needed_mib(), f"{where}: {limit} < {memory_needed_mib()} MiB needed"


def test_a_rollout_never_drops_below_the_replicas_and_keeps_revisions_to_undo(resources):
    deployment = resources["Deployment"]["spec"]
    assert deployment["strategy"]["type"] == "RollingUpdate"
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["strategy"]["rollingUpdate"]["maxSurge"] >= 1
    assert deployment["revisionHistoryLimit"] >= 1  # kubectl rollout undo needs an old ReplicaSet
    assert "readinessProbe" in container(resources)  # what "available" waits for


def test_the_kserve_canary_splits_between_revisions_in_serverless_mode():
    docs = load_yaml_docs(REPO / "deploy/kserve/inferenceservice-canary.yaml")
    base = load_yaml_docs(REPO / "deploy/kserve/inferenceservice.yaml")[0]
    assert [d["kind"] for d in docs] == ["InferenceService"]
    canary = docs[0]
    assert canary["metadata"]["name"] == base["metadata"]["name"]  # a new revision of the same service
    assert canary["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    predictor = canary["spec"]["predictor"]
    assert isinstance(predictor["canaryTrafficPercent"], int) and 0 < predictor["canaryTrafficPercent"] < 100
    assert predictor["model"]["runtime"] == base["spec"]["predictor"]["model"]["runtime"]
    assert predictor["model"]["storageUri"] != base["spec"]["predictor"]["model"]["storageUri"]
    assert predictor["model"]["resources"] == base["spec"]["predictor"]["model"]["resources"]


def test_the_pod_runs_the_image_as_the_container_tier_does(resources):
    """deploy/ runs the image the tier tested, with the tier's settings: same name and tag
    (make image's IMAGE, compose's TS_IMAGE default), non-root uid, read-only root, no
    capabilities, no privilege gain, writable only where the tier mounts tmpfs."""
    import re

    from tests.container.conftest import IMAGE, OPERATOR_FLAGS

    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    assert f"{image['name']}:{image['newTag']}" == IMAGE
    assert re.search(r"^IMAGE \?= (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1) == IMAGE
    assert f"${{TS_IMAGE:-{IMAGE}}}" in (REPO / "docker/docker-compose.yml").read_text()
    c = container(resources)
    pod = resources["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    user = next(a for i, a in dockerfile_instructions() if i == "USER")
    assert f"{pod['runAsUser']}:{pod['runAsGroup']}" == user and pod["runAsNonRoot"] is True
    assert "--read-only" in OPERATOR_FLAGS and c["securityContext"]["readOnlyRootFilesystem"] is True
    assert OPERATOR_FLAGS[OPERATOR_FLAGS.index("--cap-drop") + 1] == "ALL" and c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "no-new-privileges:true" in OPERATOR_FLAGS and c["securityContext"]["allowPrivilegeEscalation"] is False
    tmpfs = {OPERATOR_FLAGS[i + 1].split(":")[0] for i, f in enumerate(OPERATOR_FLAGS) if f == "--tmpfs"}
    assert {m["mountPath"] for m in c["volumeMounts"]} == tmpfs
