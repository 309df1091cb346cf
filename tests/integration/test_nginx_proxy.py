"""A real nginx, configured from docker/nginx's template, in front of the live TorchServe:
the same predictions as direct, management and metrics unreachable, oversized bodies 413.
It runs in the foreground on a free loopback port with every file in a temp prefix."""

from __future__ import annotations

import re
import signal
import subprocess

import pytest
import requests

from servectl.waiting import wait_for
from tests.conftest import ANSWER_TIMEOUT, assert_same_answer, free_ports
from tests.deploy.conftest import NGINX_TEMPLATE, nginx_cmd, render_nginx


@pytest.fixture(scope="module")
def proxy_prefix(tmp_path_factory):
    """The proxy's folder: its config, and access.log (one line per answer, with its request ID)."""
    return tmp_path_factory.mktemp("nginx")


@pytest.fixture(scope="module")
def proxy(live, proxy_prefix) -> str:
    (port,) = free_ports(1)
    prefix = proxy_prefix
    conf = render_nginx(prefix, upstream=f"127.0.0.1:{live.inference.port}", listen=f"127.0.0.1:{port}")
    proc = subprocess.Popen(nginx_cmd(conf), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode()
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200

    try:
        wait_for(answering, timeout=20, what="nginx to answer /healthz", retry_on=(requests.ConnectionError,))
        yield url
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful shutdown
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_predictions_through_the_proxy_equal_predictions_direct(proxy, live, built_card, test_split):
    body = {"instances": test_split["x"][:16].tolist()}
    path = f"/predictions/{built_card.model_name}"
    direct = requests.post(f"{live.inference.url}{path}", json=body, timeout=ANSWER_TIMEOUT)
    proxied = requests.post(f"{proxy}{path}", json=body, timeout=ANSWER_TIMEOUT)
    assert direct.status_code == proxied.status_code == 200
    assert_same_answer(proxied.json(), direct.json())  # two requests: their batches may differ
    # a pinned version is not served through the public proxy (tests/deploy/test_proxy_paths.py)
    versioned = requests.post(f"{proxy}{path}/{built_card.version}", json=body, timeout=ANSWER_TIMEOUT)
    assert versioned.status_code == 404 and versioned.json()["type"] == "not_found"


def test_bad_input_keeps_its_4xx_through_the_proxy(proxy, live, built_card):
    path = f"/predictions/{built_card.model_name}"
    headers = {"Content-Type": "application/json"}
    direct = requests.post(f"{live.inference.url}{path}", data=b"{not json", headers=headers, timeout=ANSWER_TIMEOUT)
    proxied = requests.post(f"{proxy}{path}", data=b"{not json", headers=headers, timeout=ANSWER_TIMEOUT)
    assert proxied.status_code == direct.status_code == 400
    assert without_id(proxied.json()) == without_id(direct.json())


def without_id(body: dict) -> dict:
    """An error body less its request ID (two requests: two IDs)."""
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", body.pop("request_id"))
    return body


def test_v2_inference_is_forwarded(proxy, live, built_card, test_split):
    rows = test_split["x"][:3].tolist()
    body = {"inputs": [{"name": "x", "shape": [3, built_card.n_features], "datatype": "FP32", "data": sum(rows, [])}]}
    path = f"/v2/models/{built_card.model_name}/infer"
    direct = requests.post(f"{live.inference.url}{path}", json=body, timeout=ANSWER_TIMEOUT)
    proxied = requests.post(f"{proxy}{path}", json=body, timeout=ANSWER_TIMEOUT)
    assert proxied.status_code == direct.status_code == 200
    assert_same_answer(proxied.json(), direct.json())


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_form_bodies_are_refused_before_torchserve(proxy, built_card, content_type):
    """A malformed form body would get a 500 from TorchServe's frontend (tests/reliability)."""
    resp = requests.post(f"{proxy}/predictions/{built_card.model_name}", data=b"a=%zz",
                         headers={"Content-Type": content_type}, timeout=10)
    assert resp.status_code == 415 and resp.json()["type"] == "unsupported_media_type"


def test_health_is_forwarded(proxy):
    assert requests.get(f"{proxy}/ping", timeout=5).json() == {"status": "Healthy"}


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/models"),
        ("GET", "/models/tabular_classifier"),
        ("PUT", "/models/tabular_classifier?min_worker=1"),
        ("DELETE", "/models/tabular_classifier"),
        ("GET", "/metrics"),
        ("OPTIONS", "/"),
        ("GET", "/api-description"),
        ("POST", "/explanations/tabular_classifier"),
    ],
)
def test_management_and_other_paths_are_not_reachable(proxy, live, method, path):
    resp = requests.request(method, f"{proxy}{path}", timeout=5)
    assert resp.status_code == 404 and resp.json()["code"] == 404
    assert requests.get(f"{live.management.url}/models", timeout=5).status_code == 200, "management itself is up"


def test_only_post_reaches_predictions(proxy, built_card):
    resp = requests.get(f"{proxy}/predictions/{built_card.model_name}", timeout=5)
    assert resp.status_code == 403 and resp.json()["code"] == 403


def proxy_body_limit() -> int:
    """The template's client_max_body_size, in bytes (nginx reads "4m" as 4 MiB)."""
    size, unit = re.search(r"client_max_body_size\s+(\d+)([kKmM]?);", NGINX_TEMPLATE.read_text()).groups()
    return int(size) * {"": 1, "k": 2**10, "m": 2**20}[unit.lower()]


def test_oversized_body_gets_413_from_the_proxy(proxy, live, built_card):
    """Over the proxy's limit and under TorchServe's max_request_size: only nginx can refuse it."""
    limit = proxy_body_limit()
    body = b'{"instances": [' + b"[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0]," * (limit // 41 + 1) + b"[0]]}"
    assert limit < len(body) < int(live.properties["max_request_size"])
    resp = requests.post(f"{proxy}/predictions/{built_card.model_name}", data=body, timeout=ANSWER_TIMEOUT)
    assert resp.status_code == 413 and resp.json()["type"] == "payload_too_large"


def access_lines(prefix, rid: str) -> list[str]:
    """The proxy's access lines holding ``rid`` (nginx writes a line as it answers)."""
    return [line for line in (prefix / "access.log").read_text().splitlines() if f"rid={rid}" in line]


def test_a_client_request_id_goes_through_and_back(proxy, proxy_prefix, built_card, test_split):
    body = {"instances": test_split["x"][:1].tolist()}
    resp = requests.post(f"{proxy}/predictions/{built_card.model_name}", json=body,
                         headers={"X-Request-ID": "order-42.a:b_c"}, timeout=ANSWER_TIMEOUT)
    assert resp.status_code == 200 and resp.headers["X-Request-ID"] == "order-42.a:b_c"
    assert resp.raw.headers.getlist("X-Request-ID") == ["order-42.a:b_c"], "one header, not nginx's and the handler's"
    wait_for(lambda: access_lines(proxy_prefix, "order-42.a:b_c"), timeout=5, what="the access line")


@pytest.mark.parametrize("bad", ["x" * 129, "a b", "id\u0085next", "id%0d%0aforged: 1", ""])
def test_a_bad_request_id_is_replaced_and_never_logged(proxy, proxy_prefix, built_card, bad):
    """Oversized, spaces, non-ASCII, an encoded CRLF: nginx's own ID instead, in the answer,
    the error body (handler and proxy alike) and the access line; the raw value nowhere."""
    path = f"/predictions/{built_card.model_name}"
    headers = {"X-Request-ID": bad.encode(), "Content-Type": "application/json"}
    for url, status in ((f"{proxy}{path}", 400), (f"{proxy}/models", 404)):
        resp = requests.post(url, data=b"{", headers=headers, timeout=ANSWER_TIMEOUT)
        rid = resp.headers["X-Request-ID"]
        assert resp.status_code == status and re.fullmatch(r"[0-9a-f]{32}", rid), rid
        assert resp.json()["request_id"] == rid
        wait_for(lambda rid=rid: access_lines(proxy_prefix, rid), timeout=5, what="the access line")
    if bad:
        assert bad not in (proxy_prefix / "access.log").read_text()


def test_errors_of_the_proxy_itself_carry_the_request_id(proxy, built_card):
    resp = requests.get(f"{proxy}/predictions/{built_card.model_name}", headers={"X-Request-ID": "mine-1"}, timeout=5)
    assert resp.status_code == 403 and resp.headers["X-Request-ID"] == "mine-1"
    assert resp.json()["request_id"] == "mine-1"
