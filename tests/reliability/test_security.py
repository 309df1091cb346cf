"""The hardened configuration, proven on real instances: loopback-only sockets, model
registration from the instance's own store only, no workflow registration, token auth when it is turned on, and a tampered model refused."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from servectl.config.settings import ServeSettings, read_properties
from servectl.instance import processes, tokens
from servectl.waiting import wait_for
from tests.conftest import REPO, free_ports
from tests.reliability.conftest import own_server, repacked_mar

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
TOKEN_REJECTED = (400, "InvalidKeyException")  # TorchServe 0.12 answers a bad/missing key with 400


def listening_sockets(settings) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket of the instance's
    process group: the frontend, its workers and anything servectl started with them."""
    pgid = os.getpgid(processes.running_pid(settings))
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if os.getpgid(proc.pid) != pgid:
                continue
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.append((conn.laddr.ip, conn.laddr.port, proc.info["name"]))
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def test_every_listening_socket_is_bound_to_loopback(steady):
    sockets = listening_sockets(steady)
    ports = {port for _, port, _ in sockets}
    expected = {steady.inference.port, steady.management.port, steady.metrics.port}
    expected |= {int(steady.properties["grpc_inference_port"]), int(steady.properties["grpc_management_port"])}
    if getattr(steady, "model_metrics", None) is not None:  # servectl's model-metrics exporter
        expected.add(steady.model_metrics.port)
    assert expected <= ports, (expected, sockets)
    assert all(ip in LOOPBACK for ip, _, _ in sockets), sockets


def test_registration_is_refused_for_urls_and_paths_outside_the_instances_store(steady, tmp_path):
    """The management API registers versions (servectl.release.lifecycle), but only archives of this
    instance's model store: never a URL, a path elsewhere (even another folder named
    model_store), or a relative path that climbs out."""
    manage = steady.management.url
    before = requests.get(f"{manage}/models", timeout=5).json()
    elsewhere = tmp_path / "model_store" / "x.mar"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(steady.mar.read_bytes())
    for url in (
        "http://127.0.0.1:1/x.mar",
        "https://127.0.0.1:1/x.mar",
        f"file://{elsewhere}",
        str(elsewhere),
        "file:///etc/passwd",
        f"../{steady.model_store.name}/{steady.model_name}.mar",
    ):
        resp = requests.post(f"{manage}/models", params={"url": url, "model_name": "intruder"}, timeout=5)
        assert resp.status_code == 404 and resp.json()["type"] == "ModelNotFoundException", (url, resp.text)
    assert requests.get(f"{manage}/models", timeout=5).json() == before


def test_the_rendered_allowed_urls_names_only_the_instances_own_store(steady):
    allowed = read_properties(steady.run_dir / "config.properties")["allowed_urls"]
    assert re.fullmatch(allowed, f"file://{steady.model_store}/m.mar")
    for url in (f"file://{steady.model_store}/sub/m.mar", "file:///x/model_store/m.mar", f"file://{steady.model_store}/m_mar"):
        assert not re.fullmatch(allowed, url), url


def test_workflow_registration_is_refused(steady):
    manage = steady.management.url
    store = Path(read_properties(steady.run_dir / "config.properties")["workflow_store"])
    assert store.is_dir() and not any(store.iterdir()), "the workflow store must be an empty folder"
    for url in ("http://127.0.0.1:1/x.war", f"{steady.model_name}.war", "x.war", f"file://{REPO}/model_store/x.war"):
        resp = requests.post(f"{manage}/workflows", params={"url": url}, timeout=5)
        assert 400 <= resp.status_code < 500, (url, resp.text)
        assert resp.json()["type"] == "WorkflowNotFoundException", resp.text
    assert requests.get(f"{manage}/workflows", timeout=5).json() == {"workflows": []}


# ---------------------------------------------------------------- token authorization on


@pytest.fixture(scope="module")
def guarded(built_card, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("guarded")
    with own_server(built_card.model_name, run_dir, disable_token_authorization="false") as settings:
        yield settings


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def rejected(resp: requests.Response) -> bool:
    return (resp.status_code, resp.json().get("type")) == TOKEN_REJECTED


def test_with_token_auth_each_api_needs_its_own_key(guarded, reference):
    keys = tokens.keys(guarded)
    assert set(keys) == {"inference", "management", "API"} and len(set(keys.values())) == 3
    key_file = guarded.key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # readable by the server's user only
    predict = f"{guarded.inference.url}/predictions/{guarded.model_name}"
    body = {"instances": reference[0][:1].tolist()}
    models = f"{guarded.management.url}/models"
    for headers in ({}, bearer("wrong"), bearer(keys["management"]), {"Authorization": keys["inference"]}):
        assert rejected(requests.post(predict, json=body, headers=headers, timeout=10)), headers
    for headers in ({}, bearer("wrong"), bearer(keys["inference"])):
        assert rejected(requests.get(models, headers=headers, timeout=10)), headers
    assert requests.post(predict, json=body, headers=bearer(keys["inference"]), timeout=10).status_code == 200
    assert requests.get(models, headers=bearer(keys["management"]), timeout=10).status_code == 200
    # registration needs the management key, and a URL stays refused even with it
    assert rejected(requests.post(models, params={"url": f"{guarded.model_name}.mar"}, headers=bearer(keys["inference"]), timeout=10))
    resp = requests.post(models, params={"url": "http://127.0.0.1:1/x.mar"}, headers=bearer(keys["management"]), timeout=10)
    assert resp.status_code == 404


def test_with_token_auth_ping_needs_the_inference_key_and_metrics_need_none(guarded):
    keys = tokens.keys(guarded)
    ping = f"{guarded.inference.url}/ping"
    assert rejected(requests.get(ping, timeout=5))
    assert requests.get(ping, headers=bearer(keys["inference"]), timeout=5).json() == {"status": "Healthy"}
    metrics = requests.get(f"{guarded.metrics.url}/metrics", timeout=5)
    families = {f.name for f in text_string_to_metric_families(metrics.text)}
    assert metrics.status_code == 200 and "ts_inference_requests" in families  # a counter family drops "_total"


def test_servectl_token_prints_the_current_inference_key_and_follows_a_rotation(guarded, reference):
    def cli_token() -> str:
        out = subprocess.run(
            [sys.executable, "-m", "servectl", "token", "--run-dir", str(guarded.run_dir)],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
        )
        return out.stdout.strip()

    old = tokens.keys(guarded)
    assert cli_token() == old["inference"]
    # the token API (authorised by the API key) replaces the inference key
    resp = requests.get(f"{guarded.management.url}/token", params={"type": "inference"}, headers=bearer(old["API"]), timeout=10)
    assert resp.status_code == 200
    new = wait_for(lambda: (lambda key: key if key != old["inference"] else None)(tokens.keys(guarded).get("inference")),
                   timeout=10, what="the key file to hold the new inference key")
    assert cli_token() == new
    predict = f"{guarded.inference.url}/predictions/{guarded.model_name}"
    body = {"instances": reference[0][:1].tolist()}
    assert rejected(requests.post(predict, json=body, headers=bearer(old["inference"]), timeout=10))
    assert requests.post(predict, json=body, headers=bearer(new), timeout=10).status_code == 200


def test_with_token_auth_off_servectl_token_prints_nothing(steady):
    out = subprocess.run(
        [sys.executable, "-m", "servectl", "token", "--run-dir", str(steady.run_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )
    assert out.stdout == "" and tokens.keys(steady) == {}


# ---------------------------------------------------------------- a tampered model


def test_a_tampered_model_file_is_refused_with_a_clear_message(built_card, tmp_path):
    src = REPO / "model_store" / f"{built_card.model_name}.mar"
    with zipfile.ZipFile(src) as mar:
        scripted = mar.read(built_card.model_file)
    tampered = bytearray(scripted)
    tampered[len(tampered) // 2] ^= 0xFF  # one flipped bit pattern in the middle of the weights archive
    store = tmp_path / "store"
    repacked_mar(src, store, {built_card.model_file: bytes(tampered)})
    run_dir = tmp_path / "run"
    start_timeout = 60  # servectl start --timeout: a refusal must end the wait before it
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "servectl", "start", "--model", built_card.model_name, "--model-store", str(store),
         "--run-dir", str(run_dir), "--ports", ",".join(map(str, free_ports(3))), "--timeout", str(start_timeout)],
        cwd=REPO, capture_output=True, text=True, timeout=start_timeout + 60,
    )
    took = time.monotonic() - t0
    print(f"tampered model refused after {took:.1f} s")
    assert proc.returncode != 0
    assert "refused to load" in proc.stderr and "sha256" in proc.stderr and "does not match the metadata" in proc.stderr, proc.stderr
    assert took < start_timeout, f"the refusal took {took:.0f} s: it waited for the timeout instead"
    log = (run_dir / "logs" / "model_log.log").read_text()
    assert "ModelCardError" in log and "refusing to serve it" in log
    assert processes.running_pid(server_settings(run_dir, built_card.model_name)) is None, "the server was left running"


def server_settings(run_dir: Path, name: str) -> ServeSettings:
    return ServeSettings.load(name, run_dir=run_dir)
