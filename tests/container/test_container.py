"""One container of the image, run as an operator runs it (read-only root, every capability
dropped, non-root, tmpfs for the run folder), checked in the order its life goes: healthy only
once the workers are READY, answering predictions, KServe's v1 and v2 paths and both metric
endpoints, management closed from outside, a killed worker replaced while it stays healthy, a
killed JVM ending it non-zero so that its restart policy brings it back, and SIGTERM draining
the requests in flight and exiting 0 inside the grace period. The tests share the container
and run in this order."""

from __future__ import annotations

import json
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml

from servectl.store import digests
from tests.container.conftest import MIN_WORKERS, MODEL, REPO, ROW, Docker, poll, predict

GRACE_SECONDS = 40  # docker stop -t: compose's stop_grace_period (tests/deploy checks it is the same)


@pytest.fixture(scope="module")
def served(docker: Docker, run) -> dict:
    start = time.monotonic()
    # on-failure: a TorchServe that dies ends the container non-zero, and docker starts it again
    name = run("--restart", "on-failure:3")
    # the HEALTHCHECK's command, run by hand while it starts: (exit code, READY workers) each time
    probes: list[tuple[int, int]] = []

    def probe() -> bool:
        out = docker("exec", name, "/app/docker/entrypoint.sh", "health", check=False)
        status = json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}
        probes.append((out.returncode, sum(w.get("status") == "READY" for w in status.get("workers", []))))
        return out.returncode == 0

    poll(probe, 120, "the health command passing", interval=0.2)
    docker.wait_healthy(name)
    return {"name": name, "address": docker.address(name), "healthy_after": time.monotonic() - start, "probes": probes}


def workers(docker: Docker, name: str) -> list[dict]:
    """The model's workers as the management API on the container's loopback describes them."""
    out = docker("exec", name, "/app/docker/entrypoint.sh", "health", check=False)
    status = json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}
    return status.get("workers", [])


def ready_pids(docker: Docker, name: str) -> set[int]:
    return {w["pid"] for w in workers(docker, name) if w.get("status") == "READY"}


def test_healthy_only_once_the_workers_are_ready(docker, served):
    name = served["name"]
    state = docker.inspect(name)
    log = state["State"]["Health"]["Log"]
    assert log[-1]["ExitCode"] == 0
    assert len(ready_pids(docker, name)) >= MIN_WORKERS
    # while it started, the check failed as long as fewer than minWorkers were READY, and passed
    # only with them all READY
    probes = served["probes"]
    assert any(code != 0 for code, _ in probes), "no probe ran before READY"
    assert all((code == 0) == (ready >= MIN_WORKERS) for code, ready in probes), probes
    print(f"\nhealthy {served['healthy_after']:.1f} s after docker run")


def test_runs_as_non_root_read_only_without_capabilities(docker, served):
    name = served["name"]
    host = docker.inspect(name)["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert docker.inspect(name)["Config"]["User"] == "10001:10001"
    got = docker.python(name, (
        "import os, psutil\n"
        "caps = {p.pid: [l for l in open(f'/proc/{p.pid}/status') if l.startswith('CapEff')][0].split()[1]"
        " for p in psutil.process_iter()}\n"
        "print(sorted({p.uids().real for p in psutil.process_iter()}), sorted(set(caps.values())))\n"
        "try:\n    open('/app/servectl/x', 'w')\nexcept OSError as exc:\n    print(exc.errno)\n"
    )).split("\n")
    assert got[0] == "[10001] ['0000000000000000']", got
    assert got[1] == "30", "the root file system is read-only (EROFS)"


def test_predictions_and_kserve_paths_answer(served):
    address = served["address"]
    resp = predict(address)
    assert resp.status_code == 200, resp.text
    assert resp.json()["predictions"][0]["label"] in ("alpha", "beta", "gamma")
    # the KServe custom predictor's paths (deploy/kserve/inferenceservice-custom.yaml), v1 and v2
    v1 = requests.post(f"http://{address}:8080/v1/models/{MODEL}:predict", json={"instances": [ROW]}, timeout=30)
    assert v1.status_code == 200 and v1.json()["predictions"][0] == resp.json()["predictions"][0], v1.text
    tensor = {"name": "input-0", "shape": [1, len(ROW)], "datatype": "FP32", "data": ROW}
    v2 = requests.post(f"http://{address}:8080/v2/models/{MODEL}/infer", json={"inputs": [tensor]}, timeout=30)
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["probabilities"]["shape"] == [1, 3]
    assert outputs["label"]["data"] == [resp.json()["predictions"][0]["label"]]


def test_both_metrics_endpoints_answer(served):
    address = served["address"]
    ts = requests.get(f"http://{address}:8082/metrics", timeout=10)
    model = requests.get(f"http://{address}:8083/metrics", timeout=10)
    assert ts.status_code == 200 and "ts_inference_requests_total" in ts.text
    assert model.status_code == 200 and "tabular_requests_total" in model.text


def test_management_api_is_not_reachable_from_outside(served):
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{served['address']}:8081/models", timeout=5)
    # nor through the inference port
    assert requests.get(f"http://{served['address']}:8080/models", timeout=5).status_code in (404, 405)


def test_a_killed_worker_is_replaced_while_the_container_stays_healthy(docker, served):
    name = served["name"]
    before = ready_pids(docker, name)
    victim = min(before)
    stop = threading.Event()
    seen: set[str] = set()

    def watch_health() -> None:
        while not stop.is_set():
            seen.add(docker.health(name))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch_health)
    watcher.start()
    try:
        docker.python(name, f"import os; os.kill({victim}, 9)")
        poll(lambda: len(ready_pids(docker, name) - before) >= 1 and len(ready_pids(docker, name)) >= MIN_WORKERS,
             90, "a new READY worker in place of the killed one")
        assert predict(served["address"]).status_code == 200
    finally:
        stop.set()
        watcher.join()
    assert seen == {"healthy"}, f"health went through {seen}"


def test_a_killed_jvm_ends_the_container_non_zero_and_its_restart_policy_brings_it_back(docker, served):
    name = served["name"]
    since = str(int(time.time()) - 1)
    java = docker.python(name, "import psutil; print([p.pid for p in psutil.process_iter(['name']) if p.info['name'] == 'java'][0])")
    docker.python(name, f"import os; os.kill({java.strip()}, 9)")
    poll(lambda: docker.inspect(name)["RestartCount"] >= 1, 60, "docker restarting the container")
    died = docker("events", "--since", since, "--until", str(int(time.time()) + 1), "--filter", f"container={name}",
                  "--filter", "event=die", "--format", "{{.Actor.Attributes.exitCode}}").stdout.split()
    assert died and died[0] != "0", f"exit codes {died}"
    assert "TorchServe exited by itself" in docker("logs", name).stderr
    docker.wait_healthy(name)
    served["address"] = docker.address(name)
    assert predict(served["address"]).status_code == 200


def test_a_second_server_that_cannot_bind_exits_non_zero_saying_why(docker, run, served):
    # in the served container's network namespace: its ports are taken
    name = run("--network", f"container:{served['name']}", network=False)
    poll(lambda: not docker.inspect(name)["State"]["Running"], 60, "the second server to exit")
    assert docker.inspect(name)["State"]["ExitCode"] != 0
    assert "already in use" in docker("logs", name).stderr


def test_a_model_that_cannot_load_exits_non_zero_saying_why(docker, run, tmp_path):
    bad = tmp_path / f"{MODEL}.mar"
    bad.write_bytes(b"not a zip")
    bad.chmod(0o644)
    name = run("-v", f"{bad}:/app/model_store/{MODEL}.mar:ro")
    poll(lambda: not docker.inspect(name)["State"]["Running"], 60, "the server to exit")
    assert docker.inspect(name)["State"]["ExitCode"] != 0
    assert "is not a model archive" in docker("logs", name).stderr


def damaged_archive(folder: Path) -> Path:
    """The shipped archive with its model file damaged, in a store folder of its own."""
    shipped = REPO / "model_store" / f"{MODEL}.mar"
    store = folder / "model_store"
    store.mkdir()
    bad = store / f"{MODEL}.mar"
    with zipfile.ZipFile(shipped) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, b"damaged" if item.filename == "model.pt" else src.read(item))
    bad.chmod(0o644)
    return bad


def exits_non_zero_saying(docker: Docker, name: str, reason: str) -> None:
    poll(lambda: not docker.inspect(name)["State"]["Running"], 120, "the server to exit")
    assert docker.inspect(name)["State"]["ExitCode"] != 0
    assert reason in docker("logs", name).stderr
    assert docker.inspect(name)["State"]["Health"]["Status"] != "healthy"


def test_a_model_the_handler_refuses_exits_non_zero_saying_why(docker, run, tmp_path):
    """A real archive whose model file is damaged, recorded as built (so servectl's digest
    check passes): the handler refuses it while the workers load, and the container ends with
    that reason instead of staying up answering 5xx."""
    bad = damaged_archive(tmp_path)
    record = digests.record(bad.parent, [bad])
    record.chmod(0o644)
    name = run("-v", f"{bad}:/app/model_store/{MODEL}.mar:ro", "-v", f"{record}:/app/model_store.sha256:ro")
    exits_non_zero_saying(docker, name, "refused to load")


def test_a_tampered_archive_is_refused_before_torchserve_runs_it(docker, run, tmp_path):
    """The same damaged archive without a record of its own: servectl refuses it by its sha256
    (the image's record is the built one's) before TorchServe loads any of its code."""
    bad = damaged_archive(tmp_path)
    name = run("-v", f"{bad}:/app/model_store/{MODEL}.mar:ro")
    exits_non_zero_saying(docker, name, "the archive was changed after it was built")


def test_sigterm_drains_the_requests_in_flight_and_exits_0_within_the_grace_period(docker, served):
    name, address = served["name"], served["address"]
    rows = [ROW] * 10_000  # the most a request may carry: each takes a while in the server
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(predict, address, rows, 60) for _ in range(64)]
        while not any(f.done() for f in futures):  # the first answer: the server is busy with the rest
            time.sleep(0.01)
        in_flight = sum(not f.done() for f in futures)
        start = time.monotonic()
        stopper = pool.submit(docker, "stop", "-t", str(GRACE_SECONDS), name, timeout=GRACE_SECONDS + 30)
        codes = [f.result().status_code if f.exception() is None else repr(f.exception()) for f in futures]
        stopper.result()
    took = time.monotonic() - start
    assert codes == [200] * len(codes), f"failed during the stop: {[c for c in codes if c != 200]}"
    state = docker.inspect(name)["State"]
    assert state["ExitCode"] == 0 and took < GRACE_SECONDS, (state["ExitCode"], took)
    assert "drained" in docker("logs", name).stdout
    # without the drain (stop.timeout_seconds 0) 62 of 64 such requests failed: TorchServe's stop
    # closes every connection
    assert in_flight > 16, "the stop came after the requests, not in the middle of them"
    print(f"\n{in_flight} of {len(codes)} requests unanswered at SIGTERM, all 200; stopped in {took:.1f} s")


def test_the_tier_runs_the_image_as_compose_does():
    """The flags above are compose's service settings (one list of how the image runs)."""
    service = yaml.safe_load((REPO / "docker" / "docker-compose.yml").read_text())["x-torchserve"]
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert service["security_opt"] == ["no-new-privileges:true"]
    from tests.container.conftest import RUN_DIR_TMPFS, TMP_TMPFS

    assert service["tmpfs"] == [RUN_DIR_TMPFS, TMP_TMPFS]
    assert service["stop_grace_period"] == f"{GRACE_SECONDS}s"
