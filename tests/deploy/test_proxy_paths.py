"""Both public proxies (the stack's nginx template and servectl's canary proxy, built from it)
in front of a loopback upstream that records what reaches it: a client's ``describe`` header
never passes (TorchServe would turn the request into a describe call), pinned-version paths
answer 404 unless serve_config/lifecycle.yaml exposes them, the canary's split is logged answer
by answer, and the canary's files are replaced by rename, never rewritten in place."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import replace

import pytest
import requests

from servectl.config.settings import Endpoint, ServeSettings
from servectl.release import canary
from servectl.waiting import wait_for
from tests.conftest import free_ports
from tests.deploy.conftest import nginx_cmd, render_nginx
from tests.support.http_stub import StubHandler, stub_server

MODEL = "tabular_classifier"
DESCRIBE_HEADERS = [{"describe": "True"}, {"Describe": "True"}, {"DESCRIBE": "1"}]
PINNED = [f"/predictions/{MODEL}/1.1", f"/predictions/{MODEL}/1.1/", f"/predictions/{MODEL}%2F1.1",
          f"/predictions//{MODEL}/1.1", f"/v2/models/{MODEL}/versions/1.1/infer"]
UNPINNED = [f"/predictions/{MODEL}", f"/v2/models/{MODEL}/infer"]


class Recorder(StubHandler):
    """Answers every POST 200 and keeps (path, headers) of what reached it."""

    seen: list[tuple[str, dict[str, str]]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.read_body()
        self.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        self.send_body(200, b'{"ok": true}')


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[int, list[tuple[str, dict[str, str]]]]]:
    seen: list[tuple[str, dict[str, str]]] = []
    handler = type("R", (Recorder,), {"seen": seen})
    with stub_server(handler, free_ports(1)[0]) as httpd:
        yield httpd.server_port, seen


@pytest.fixture(scope="module")
def stack_proxy(upstream, tmp_path_factory) -> Iterator[str]:
    (port,) = free_ports(1)
    conf = render_nginx(tmp_path_factory.mktemp("nginx"), upstream=f"127.0.0.1:{upstream[0]}", listen=f"127.0.0.1:{port}")
    proc = subprocess.Popen(nginx_cmd(conf), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=1).ok, 20, "nginx /healthz", retry_on=(requests.ConnectionError,))
        yield url
    finally:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(10)


@pytest.fixture
def canary_settings(upstream, tmp_path) -> Iterator[ServeSettings]:
    settings = ServeSettings.load(MODEL, run_dir=tmp_path / "run").with_ports(*free_ports(3))
    settings = replace(settings, inference=Endpoint("127.0.0.1", upstream[0]))
    yield settings
    canary.stop_proxy(settings)


def reached(upstream, url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str] | None]:
    """The proxy's status for a POST to ``path``, and the headers the upstream got (None: nothing reached it)."""
    before = len(upstream[1])
    resp = requests.post(f"{url}{path}", json={"instances": [[0.0] * 10]}, headers=headers or {}, timeout=10)
    got = upstream[1][before:]
    assert len(got) <= 1
    return resp.status_code, got[0][1] if got else None


@pytest.mark.parametrize("headers", DESCRIBE_HEADERS)
def test_the_stack_proxy_strips_a_client_describe_header(stack_proxy, upstream, headers):
    status, seen = reached(upstream, stack_proxy, f"/predictions/{MODEL}", headers)
    assert status == 200 and seen is not None and "describe" not in seen, seen
    assert seen["content-type"] == "application/json"  # other headers still pass


@pytest.mark.parametrize("path", PINNED)
def test_the_stack_proxy_refuses_pinned_version_paths(stack_proxy, upstream, path):
    status, seen = reached(upstream, stack_proxy, path)
    assert (status, seen) == (404, None)


@pytest.mark.parametrize("path", UNPINNED)
def test_the_stack_proxy_forwards_the_default_paths(stack_proxy, upstream, path):
    status, seen = reached(upstream, stack_proxy, path)
    assert status == 200 and seen is not None


def test_the_canary_proxy_strips_describe_refuses_pinned_paths_and_logs_the_split(canary_settings, upstream):
    endpoint = canary.apply(canary_settings, "1.1", 50, free_ports(1)[0])
    start = len(upstream[1])
    for headers in DESCRIBE_HEADERS:
        status, seen = reached(upstream, endpoint.url, f"/predictions/{MODEL}", headers)
        assert status == 200 and seen is not None and "describe" not in seen
    for path in PINNED:
        assert reached(upstream, endpoint.url, path) == (404, None), path
    for _ in range(40):
        assert reached(upstream, endpoint.url, f"/predictions/{MODEL}")[0] == 200
    split = [p for p, _ in upstream[1][start:] if p == f"/predictions/{MODEL}/1.1"]
    assert 0 < len(split) < 43  # about half went to the candidate
    log = canary.proxy_dir(canary_settings) / canary.SPLIT_LOG

    def logged() -> list[tuple[str, int]]:  # nginx writes the line just after the answer
        return [(a["uri"], a["status"]) for a in map(json.loads, log.read_text().splitlines())]

    # every split answer, and only those (not the pinned requests refused above, not the default's)
    wait_for(lambda: len(logged()) >= len(split), 5, "the split log")
    assert logged() == [(f"/predictions/{MODEL}/1.1", 200)] * len(split)


def test_the_canary_proxy_forwards_pinned_paths_when_the_setting_says_so(canary_settings, upstream):
    shipped = canary_settings.lifecycle
    proxy = shipped.proxy.model_copy(update={"expose_pinned_versions": True})
    exposed = replace(canary_settings, lifecycle=shipped.model_copy(update={"proxy": proxy}))
    endpoint = canary.apply(exposed, None, 0, free_ports(1)[0])
    status, seen = reached(upstream, endpoint.url, f"/predictions/{MODEL}/1.1")
    assert status == 200 and seen is not None


def test_the_canary_proxy_replaces_its_files_by_rename(canary_settings):
    """A reload (or a crash) mid-write must never see half a file: each is written beside the
    old one and renamed over it, so every write gives a new inode."""
    endpoint = canary.proxy_endpoint(canary_settings, free_ports(1)[0])
    canary.write_config(canary_settings, endpoint, None, 0)
    folder = canary.proxy_dir(canary_settings)
    files = ["nginx.conf", "default.conf", "canary.conf"]
    before = {name: (folder / name).stat().st_ino for name in files}
    canary.write_config(canary_settings, endpoint, "1.1", 10)
    assert all((folder / name).stat().st_ino != before[name] for name in files)
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))


@pytest.mark.parametrize("sent, kept", [("cust-9:a.b_c", True), ("x" * 129, False), ("a\x1bb", False)])
def test_the_canary_proxy_passes_a_valid_request_id_and_logs_it(canary_settings, upstream, sent, kept):
    """The canary proxy renders the same template: a valid X-Request-ID reaches TorchServe and
    its access.log; a bad one is replaced by nginx's (32 hex digits) there and in the answer."""
    endpoint = canary.apply(canary_settings, "1.1", 50, free_ports(1)[0])
    before = len(upstream[1])
    resp = requests.post(f"{endpoint.url}/predictions/{MODEL}", json={"instances": [[0.0] * 10]},
                         headers={"X-Request-ID": sent.encode()}, timeout=10)
    rid = resp.headers["X-Request-ID"]
    assert resp.status_code == 200 and upstream[1][before][1]["x-request-id"] == rid
    assert rid == sent if kept else re.fullmatch(r"[0-9a-f]{32}", rid)
    log = canary.proxy_dir(canary_settings) / canary.ACCESS_LOG
    wait_for(lambda: f"rid={rid}" in log.read_text(), 5, "the access line")
    assert kept or sent not in log.read_text()
