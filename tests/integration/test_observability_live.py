"""Request-level observability on a live TorchServe started from the real archive with
handler.observability turned on (JSON logs, an access line per request, OTLP traces to a real
receiver, every prediction logged): request IDs end to end, spans in the client's trace, the
prediction log read back as training data, and a receiver that goes down costing nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import torch
import yaml

from handlers.observability import prediction_log
from model import archive
from model.data import load_csv
from tests.conftest import ANSWER_TIMEOUT, ARTIFACTS, REPO
from tests.reliability.conftest import own_server
from tests.support.otlp_receiver import Receiver

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def receiver():
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def observed(built_card, receiver, tmp_path_factory):
    """(settings, prediction log folder): the built model archived with observability on, served."""
    folder = tmp_path_factory.mktemp("observed")
    config = yaml.safe_load((REPO / "serve_config/model-config.yaml").read_text())
    logs = folder / "predictions"
    config["handler"]["observability"].update(
        log_format="json", access_log="all", otlp_endpoint=receiver.endpoint, otlp_timeout_s=0.5,
        prediction_log={**config["handler"]["observability"]["prediction_log"], "sample_rate": 1.0,
                        "directory": str(logs)},
    )  # fmt: skip
    (folder / "model-config.yaml").write_text(yaml.safe_dump(config))
    for f in ARTIFACTS.iterdir():
        if f.is_file():
            shutil.copy2(f, folder / f.name)
    mar = archive.archive(folder, folder / "store", folder / "build", folder / "model-config.yaml")
    (folder / "run").mkdir()
    with own_server(built_card.model_name, folder / "run", model_store=mar.parent) as settings:
        yield settings, logs


def post(settings, card, body, headers=None):
    return requests.post(f"{settings.inference.url}/predictions/{card.model_name}", json=body,
                         headers=headers or {}, timeout=ANSWER_TIMEOUT)  # fmt: skip


def model_log_json(settings, rid: str) -> list[dict]:
    """The handler's JSON lines naming ``rid`` in model_log.log (after log4j's prefix)."""
    found = []
    for line in (settings.log_dir / "model_log.log").read_text(errors="replace").splitlines():
        _, sep, tail = line.partition(" - {")
        if sep and rid in tail:
            found.append(json.loads("{" + tail))
    return found


def test_the_clients_id_is_logged_beside_torchserves(observed, built_card, test_split):
    """Straight to TorchServe the answer's header is the frontend's UUID (it sets it after the
    handler: handlers/observability/request_id.py); nginx answers the client's (test_nginx_proxy)."""
    settings, _ = observed
    resp = post(settings, built_card, {"instances": test_split["x"][:3].tolist()}, {"X-Request-ID": "cust-7.1"})
    assert resp.status_code == 200 and UUID.fullmatch(resp.headers["X-Request-ID"])
    deadline = time.monotonic() + 10
    while not (lines := model_log_json(settings, "cust-7.1")) and time.monotonic() < deadline:
        time.sleep(0.1)
    (line,) = lines
    assert line["logger"] == "handlers.access" and line["status"] == 200 and line["rows"] == 3
    assert line["model_version"] == built_card.version and line["inference_ms"] >= 0
    assert line["torchserve_id"] == resp.headers["X-Request-ID"]
    bad = post(settings, built_card, {"instances": [[1]]}, {"X-Request-ID": "cust-7.2"})
    assert bad.status_code == 400 and bad.json()["request_id"] == "cust-7.2"


@pytest.mark.parametrize("bad", ["x" * 200, "a\x1b[31mred", "a\x01b", "a b\tc"])
def test_a_bad_id_is_replaced_by_torchserves_own_everywhere(observed, built_card, bad):
    settings, _ = observed
    resp = post(settings, built_card, {"instances": [[1, 2]]}, {"X-Request-ID": bad})
    rid = resp.headers["X-Request-ID"]
    assert resp.status_code == 400 and UUID.fullmatch(rid) and resp.json()["request_id"] == rid
    log = settings.log_dir / "model_log.log"
    deadline = time.monotonic() + 10  # the worker's line reaches the file through the frontend: poll for it
    while rid not in (text := log.read_text(errors="replace")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rid in text and bad not in text and "\x1b" not in text


def test_spans_share_the_clients_trace_and_carry_version_and_rows(observed, receiver, built_card, test_split):
    settings, _ = observed
    resp = post(settings, built_card, {"instances": test_split["x"][:5].tolist()},
                {"traceparent": TRACEPARENT, "X-Request-ID": "traced-1"})
    assert resp.status_code == 200
    spans = {s.name: s for s in receiver.trace(TRACE_ID, 4)}
    assert set(spans) == {"predict", "decode", "score", "encode"}
    root = spans["predict"]
    assert root.parent_span_id == "b7ad6b7169203331"
    assert root.attributes["model.version"] == built_card.version and root.attributes["request.rows"] == 5
    assert root.attributes["request.id"] == "traced-1" and root.attributes["http.response.status_code"] == 200


def test_the_prediction_log_trains_back(observed, built_card, test_split, tmp_path):
    settings, logs = observed
    x = test_split["x"]
    resp = post(settings, built_card, {"instances": x.tolist()}, {"X-Request-ID": "logged-1"})
    assert resp.status_code == 200
    (record,) = [r for r in prediction_log.read(logs) if r["request_id"] == "logged-1"]
    assert record["model_version"] == built_card.version
    assert record["labels"] == [p["label"] for p in resp.json()["predictions"]]
    out = tmp_path / "rows.csv"
    prediction_log.main(["to-csv", str(logs), "--out", str(out)])
    data = load_csv(out, "label")  # make train DATA=rows.csv TARGET=label
    assert data.feature_names == built_card.feature_names
    n = len(x)
    assert any(torch.equal(data.x[i : i + n], x) for i in range(len(data) - n + 1))
    # what make train DATA=rows.csv TARGET=label runs (a few epochs, no gate: the rows are few)
    train = [sys.executable, "-m", "model.train", "--data", str(out), "--target", "label",
             "--epochs", "3", "--min-accuracy", "0", "--out", str(tmp_path / "retrained")]  # fmt: skip
    subprocess.run(train, cwd=REPO, check=True, capture_output=True, timeout=300)
    assert (tmp_path / "retrained" / "checkpoint.pt").is_file()


def test_an_explanation_is_traced_as_explain(observed, receiver, built_card, test_split):
    settings, _ = observed
    trace_id = "1" * 32
    resp = requests.post(f"{settings.inference.url}/explanations/{built_card.model_name}",
                         json={"instances": test_split["x"][:2].tolist()},
                         headers={"traceparent": f"00-{trace_id}-{'2' * 16}-01"}, timeout=ANSWER_TIMEOUT)  # fmt: skip
    assert resp.status_code == 200
    spans = {s.name for s in receiver.trace(trace_id, 4)}
    assert spans == {"explain", "decode", "encode"}  # the root and its step share the name


def test_a_receiver_that_is_down_costs_no_answer(observed, receiver, built_card, test_split):
    """Runs last in this module (it stops the module's receiver). The receiver stops; a mixed load (good and bad requests, traced) all answered as before."""
    settings, _ = observed
    receiver.__exit__()
    good, bad = {"instances": test_split["x"][:2].tolist()}, {"instances": [[1]]}
    headers = {"traceparent": TRACEPARENT}

    def one(i: int) -> tuple[int, float]:
        t = time.perf_counter()
        status = post(settings, built_card, bad if i % 5 == 0 else good, headers).status_code
        return status, time.perf_counter() - t

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(200)))
    assert [s for s, _ in answers] == [400 if i % 5 == 0 else 200 for i in range(200)]
    # a hang guard, not a speed test (make bench-tracing measures the cost): no answer waits on an export
    assert max(t for _, t in answers) < 5
    # dropped spans do not flood the log: a line per failed export at most, none per span
    text = (settings.log_dir / "model_log.log").read_text(errors="replace")
    assert "Queue full" not in text and text.count("Failed to export") < 50
