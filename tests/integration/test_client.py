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
from servectl.instance import readiness
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
    assert health["ready"] is readiness.is_ready(readiness.model_status(live)) is True  # servectl's readiness rule
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
    # the request's ID (TorchServe's, as the client sent none) is printed with the error
    assert info.value.request_id and f"(request ID {info.value.request_id})" in str(info.value)


def test_connection_errors_are_retried_then_raised():
    (port,) = free_ports(1)
    client = Client(ClientConfig(f"http://127.0.0.1:{port}", retries=2, backoff=0.01, connect_timeout=0.5))
    with pytest.raises(PredictionError) as info:
        client.predict([[0.0] * 10])
    assert info.value.status == 0 and info.value.type == "unreachable"
    assert "Max retries exceeded" in info.value.message


class Flaky(BaseHTTPRequestHandler):
    """Answers 503 twice, then a valid prediction; 500 on another path (never retried); on a
    third, "Worker died." as 500 then 507, then a valid prediction."""

    hits: list[str] = []

    def do_POST(self):
        Flaky.hits.append(self.path)
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path.endswith("/broken"):
            return self._send(500, {"code": 500, "type": "internal", "message": "boom"})
        if self.path.endswith("/dying") and Flaky.hits.count(self.path) <= 2:  # TorchServe's words, both codes
            status = 500 if Flaky.hits.count(self.path) == 1 else 507
            return self._send(status, {"code": status, "type": "InternalServerException", "message": "Worker died."})
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


def test_a_dead_worker_answer_is_retried(flaky):
    client = Client(ClientConfig(flaky, model="m", version="dying", retries=3, backoff=0.01))
    assert client.predict([[1.0]]).rows[0].label == "a"
    assert Flaky.hits == ["/predictions/m/dying"] * 3
    Flaky.hits = []
    with pytest.raises(PredictionError) as info:  # a bounded budget: the last answer is raised
        Client(ClientConfig(flaky, model="m", version="dying", retries=1, backoff=0.01)).predict([[1.0]])
    assert (info.value.status, info.value.message) == (507, "Worker died.") and len(Flaky.hits) == 2


def test_predict_binary_returns_the_probabilities_as_an_array(client, built_card, test_split, expected):
    scores = client.predict(test_split["x"][:4].numpy(), binary=True)
    assert scores.class_names == built_card.class_names and scores.model_version == built_card.version
    assert scores.probabilities.dtype == np.float32 and scores.probabilities.shape == tuple(expected.shape)
    np.testing.assert_allclose(scores.probabilities, expected.numpy(), atol=PROBABILITY_ATOL)
    assert scores.labels == [built_card.class_names[i] for i in expected.argmax(1)]


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


# ---------------------------------------------------------------- score (bulk files)


def score_input(test_split, built_card, tmp_path, n_rows=12_345, header=True):
    """A CSV of ``n_rows`` test rows in a shuffled order (blank lines here and there), and
    the in-process probabilities in that order."""
    x = test_split["x"]
    order = np.random.default_rng(3).integers(0, len(x), n_rows)
    rows = x[order]
    lines = [",".join(map(repr, r)) for r in rows.tolist()]
    for at in (5, 4_000, 9_999):
        lines.insert(at, "")
    path = tmp_path / "rows.csv"
    path.write_text((",".join(built_card.feature_names) + "\n" if header else "") + "\n".join(lines) + "\n")
    return path, rows


def read_scored(path):
    lines = path.read_text().splitlines()
    return lines[0].split(","), [line.split(",")[0] for line in lines[1:]], np.array(
        [[float(v) for v in line.split(",")[1:]] for line in lines[1:]])


@pytest.mark.parametrize("header", [True, False], ids=["header", "no header"])
def test_score_writes_every_row_in_input_order(live, built_card, built_model, test_split, tmp_path, header):
    src, rows = score_input(test_split, built_card, tmp_path, header=header)
    out = run_cli(live, "score", str(src), "--out", str(tmp_path / "scored.csv"), "--chunk-rows", "1000",
                  "--connections", "3", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert f"scored {len(rows):,} rows" in out.stderr
    columns, labels, probabilities = read_scored(tmp_path / "scored.csv")
    with torch.inference_mode():
        want = torch.softmax(built_model(rows), 1).numpy()
    assert columns == ["label", *built_card.class_names]
    np.testing.assert_allclose(probabilities, want, atol=PROBABILITY_ATOL)
    assert labels == [built_card.class_names[i] for i in want.argmax(1)]


def test_score_stops_on_a_4xx_naming_the_row(live, built_card, test_split, tmp_path):
    src, rows = score_input(test_split, built_card, tmp_path)
    lines = src.read_text().splitlines()
    bad_line = 7_003  # 1-based line in the file: the header, then data with a blank line at 5 and 4,000
    cells = lines[bad_line - 1].split(",")
    cells[2] = "oops"
    lines[bad_line - 1] = ",".join(cells)
    src.write_text("\n".join(lines) + "\n")
    out = run_cli(live, "score", str(src), "--out", str(tmp_path / "scored.csv"), "--chunk-rows", "1000",
                  "--no-progress")
    assert out.returncode == 1
    name = built_card.feature_names[2]
    assert f"line {bad_line} (data row {bad_line - 4}), column {name}: 'oops' is not a number" in out.stderr
    assert "(400 invalid_value)" in out.stderr
    assert not (tmp_path / "scored.csv").exists() and not (tmp_path / "scored.csv.partial").exists()
