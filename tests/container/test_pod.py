"""The Kubernetes pod (deploy/kubernetes/deployment.yaml), which the KServe custom predictor
(deploy/kserve/inferenceservice-custom.yaml) repeats, run as its two containers: TorchServe
with the manifest's arguments and the proxy sidecar in its network namespace with the
manifest's environment and the template its ConfigMap carries. KServe's v1 and v2 paths reach
the handler through the proxy; TorchServe's own inference port is not reachable from outside
the pod; the metric ports are. (The nginx here is the one compose runs on this engine: the
official image, or its Debian stand-in where none can be pulled.)"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
import requests
import yaml

from tests.container.conftest import MODEL, REPO, ROW, Docker, poll

TEMPLATES = REPO / "docker" / "nginx" / "templates"


def pod_containers() -> dict[str, dict]:
    deployment = yaml.safe_load((REPO / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


@pytest.fixture(scope="module")
def pod(docker: Docker, run) -> Iterator[str]:
    spec = pod_containers()
    torchserve = run(args=tuple(spec["torchserve"]["args"]))
    docker.wait_healthy(torchserve)
    nginx = subprocess.run([str(REPO / "docker" / "compose.sh"), "image", "nginx"], env=docker.env,
                           capture_output=True, text=True, timeout=600)
    assert nginx.returncode == 0, nginx.stderr
    env = [f"--env={e['name']}={e['value']}" for e in spec["proxy"]["env"]]
    proxy = f"ts-tier-{uuid.uuid4().hex[:8]}"
    # read-only like the manifest, writable where it mounts emptyDirs (and the Debian stand-in's
    # own temp folder)
    mounts = [m["mountPath"] for m in spec["proxy"]["volumeMounts"] if not m.get("readOnly")]
    # (owned by the proxy's user here; in the pod the emptyDirs are writable through fsGroup)
    user = spec["proxy"]["securityContext"]
    owner = f"uid={user['runAsUser']},gid={user['runAsGroup']}"
    writable = [f"--tmpfs={path}:{owner}" for path in (*mounts, "/var/lib/nginx")]
    docker("run", "-d", "--name", proxy, f"--network=container:{torchserve}", "--read-only", *writable, *env,
           f"--user={user['runAsUser']}:{user['runAsGroup']}", "--cap-drop=ALL", "--security-opt=no-new-privileges:true",
           "-v", f"{TEMPLATES}:/etc/nginx/templates:ro", nginx.stdout.strip())
    address = docker.address(torchserve)
    try:
        healthz = f"http://{address}:8080/healthz"
        poll(lambda: _answers(healthz) or not docker.inspect(proxy)["State"]["Running"], 30, "the proxy to answer or exit")
        if not _answers(healthz):
            logs = docker("logs", proxy, check=False)
            pytest.fail(f"the proxy does not answer:\n{logs.stdout[-2000:]}\n{logs.stderr[-2000:]}")
        yield address
    finally:
        docker("rm", "-f", proxy, check=False)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_kserve_v1_and_v2_paths_answer_through_the_proxy(pod):
    v1 = requests.post(f"http://{pod}:8080/v1/models/{MODEL}:predict", json={"instances": [ROW, ROW]}, timeout=30)
    assert v1.status_code == 200, v1.text
    predictions = v1.json()["predictions"]
    assert len(predictions) == 2 and predictions[0]["label"] in ("alpha", "beta", "gamma")
    tensor = {"name": "input-0", "shape": [2, len(ROW)], "datatype": "FP32", "data": ROW + ROW}
    v2 = requests.post(f"http://{pod}:8080/v2/models/{MODEL}/infer", json={"inputs": [tensor]}, timeout=30)
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["label"]["data"] == [p["label"] for p in predictions]
    assert requests.post(f"http://{pod}:8080/predictions/{MODEL}", json={"instances": [ROW]}, timeout=30).status_code == 200


def test_only_the_proxy_takes_inference_and_its_rules_apply(pod):
    inference = pod_containers()["proxy"]["env"][0]["value"].split(":")[1]  # TS_UPSTREAM's port
    with pytest.raises(requests.ConnectionError):
        requests.post(f"http://{pod}:{inference}/predictions/{MODEL}", json={"instances": [ROW]}, timeout=5)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{pod}:8081/models", timeout=5)
    assert requests.get(f"http://{pod}:8080/models", timeout=5).status_code == 404
    too_big = requests.post(f"http://{pod}:8080/v1/models/{MODEL}:predict", data=b"x" * (5 * 2**20),
                            headers={"Content-Type": "application/json"}, timeout=30)
    assert too_big.status_code == 413
    for port in (8082, 8083):
        assert requests.get(f"http://{pod}:{port}/metrics", timeout=10).status_code == 200
