"""The Python client and its command line against the live server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from client import Client, ClientConfig, PredictionError
from servectl import server
from tests.conftest import MODEL_CONFIG, PROBABILITY_ATOL, REPO, free_ports
from tests.unit.test_contract import ERRORS


@pytest.fixture(scope="module")
def client(live, built_card) -> Client:
    return Client(ClientConfig(live.inference.url, live.management.url, built_card.model_name))


@pytest.fixture(scope="module")
def expected(built_model, test_split):
    with torch.inference_mode():
        return torch.softmax(built_model(test_split["x"][:4]), 1)


class Table:
    """A DataFrame-like input: anything with to_dict("records"), as pandas has."""

    def __init__(self, columns, rows):
        self.columns, self.rows = columns, rows

    def to_dict(self, orient):
        assert orient == "records"
        return [dict(zip(self.columns, r)) for r in self.rows]


def check(result, expected, card):
    assert result.model_name == card.model_name and result.model_version == card.version
    got = torch.tensor([[p.probabilities[c] for c in card.class_names] for p in result.rows])
    assert torch.allclose(got, expected, atol=PROBABILITY_ATOL)
    assert [p.label for p in result.rows] == [card.class_names[i] for i in expected.argmax(1)]


def test_predict_accepts_rows_dicts_tables_csv_and_npy(client, built_card, test_split, expected, tmp_path):
    rows = test_split["x"][:4].tolist()
    names = list(built_card.feature_names)
    check(client.predict(rows), expected, built_card)
    check(client.predict([dict(zip(names, r)) for r in rows]), expected, built_card)
    check(client.predict(Table(names[::-1], [r[::-1] for r in rows])), expected, built_card)
    check(client.predict(np.array(rows)), expected, built_card)
    check(client.predict_npy(rows), expected, built_card)
    path = tmp_path / "rows.csv"
    path.write_text(",".join(names) + "\n" + "\n".join(",".join(map(repr, r)) for r in rows) + "\n")
    check(client.predict_csv(path), expected, built_card)


def test_metadata_and_health(client, live, built_card):
    assert client.metadata()["feature_names"] == list(built_card.feature_names)
    health = client.health()
    assert health["ready"] is server.is_ready(server.model_status(live)) is True  # servectl's readiness rule
    assert health["ready_workers"] == health["min_workers"] == MODEL_CONFIG.min_workers


def test_without_the_management_port_health_says_so_and_metadata_explains(live, built_card):
    """A deployment publishes inference only: health still answers from /ping, and the
    model-card call fails with a message that names the unpublished management API."""
    closed = free_ports(1)[0]
    client = Client(ClientConfig(live.inference.url, f"http://127.0.0.1:{closed}", built_card.model_name, retries=0))
    health = client.health()
    assert health["server"] == "Healthy" and health["ready"] is None
    assert "management API" in health["detail"]
    with pytest.raises(PredictionError) as err:
        client.metadata()
    assert err.value.status == 0 and "management API" in err.value.message and "loopback" in err.value.message


JSON_ERRORS = [e for e in ERRORS if e[2] == "application/json" and e[4] != "too_many_rows" and isinstance(e[1], dict)]


@pytest.mark.parametrize("case", JSON_ERRORS, ids=[e[0] for e in JSON_ERRORS])
def test_every_error_class_raises_a_typed_error(client, case):
    _, body, _, status, type_, fragment = case
    with pytest.raises(PredictionError) as info:
        client.post("application/json", json.dumps(body).encode())
    assert (info.value.status, info.value.type) == (status, type_)
    assert fragment in info.value.message


def test_connection_errors_are_retried_then_raised():
    (port,) = free_ports(1)
    client = Client(ClientConfig(f"http://127.0.0.1:{port}", retries=2, backoff=0.01, connect_timeout=0.5))
    with pytest.raises(PredictionError) as info:
        client.predict([[0.0] * 10])
    assert info.value.status == 0 and info.value.type == "unreachable"
    assert "Max retries exceeded" in info.value.message


class Flaky(BaseHTTPRequestHandler):
    """Answers 503 twice, then a valid prediction; 500 on another path (never retried)."""

    hits: list[str] = []

    def do_POST(self):
        Flaky.hits.append(self.path)
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path.endswith("/broken"):
            return self._send(500, {"code": 500, "type": "internal", "message": "boom"})
        if Flaky.hits.count(self.path) <= 2:
            return self._send(503, {"code": 503, "type": "unavailable", "message": "no worker"})
        self._send(200, {"model_name": "m", "model_version": "1", "predictions": [
            {"label": "a", "class_id": 0, "probabilities": {"a": 1.0}}]})

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Flaky.hits = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_503_is_retried_with_backoff_and_500_is_not(flaky):
    client = Client(ClientConfig(flaky, model="m", retries=3, backoff=0.05))
    started = time.monotonic()
    assert client.predict([[1.0]]).rows[0].label == "a"
    assert Flaky.hits == ["/predictions/m"] * 3 and time.monotonic() - started >= 0.05
    with pytest.raises(PredictionError) as info:
        Client(ClientConfig(flaky, model="m", version="broken")).predict([[1.0]])
    assert info.value.status == 500 and Flaky.hits.count("/predictions/m/broken") == 1


def run_cli(live, *args, stdin=""):
    return subprocess.run([sys.executable, "-m", "client", *args, "--url", live.inference.url,
                           "--management-url", live.management.url, "--model", live.model_name],
                          input=stdin, capture_output=True, text=True, cwd=REPO, timeout=60)


def test_cli_prints_a_table_from_csv_and_stdin(live, built_card, test_split, expected, tmp_path):
    rows = test_split["x"][:4].tolist()
    path = tmp_path / "rows.csv"
    path.write_text("\n".join(",".join(map(repr, r)) for r in rows) + "\n")
    for out in (run_cli(live, "predict", "--csv", str(path)), run_cli(live, "predict", stdin=json.dumps(rows))):
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[1].split() == ["row", "label", *built_card.class_names]
        assert [line.split()[1] for line in lines[2:]] == [built_card.class_names[i] for i in expected.argmax(1)]


def test_cli_exits_non_zero_with_the_server_message(live):
    out = run_cli(live, "predict", stdin=json.dumps([[1, 2, 3]]))
    assert out.returncode == 1
    assert "400 wrong_shape: instances[0]: expected 10 features, got 3" in out.stderr
