"""The request contract against a live TorchServe: every error class, every format,
the v2 endpoint, the model card, and no 5xx or worker restart afterwards."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch

from tests.conftest import ANSWER_TIMEOUT, MODEL_CONFIG, PROBABILITY_ATOL
from tests.integration.conftest import frontend_metric, workers
from tests.unit.test_contract import ERRORS

# cases whose row limit is the unit tests' 50; the live limit (handler.max_rows) is tested below
LIVE_ERRORS = [e for e in ERRORS if e[4] != "too_many_rows"]


@pytest.fixture(scope="module")
def untouched(live):
    """Worker identities and the 5xx count before this module's bad requests."""
    return workers(live), frontend_metric(live, "Requests5XX")


def post(url, body, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    return requests.post(url, data=body, headers=headers, timeout=ANSWER_TIMEOUT)


@pytest.mark.parametrize(("body", "content_type", "status", "type_", "fragment"),
                         [e[1:] for e in LIVE_ERRORS], ids=[e[0] for e in LIVE_ERRORS])
def test_error_table_live(untouched, predict_url, body, content_type, status, type_, fragment):
    resp = post(predict_url, body, content_type)
    assert resp.status_code == status
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json() == {"code": status, "type": type_, "message": resp.json()["message"],
                           "request_id": resp.headers["X-Request-ID"]}  # TorchServe's ID: the client sent none
    assert fragment in resp.json()["message"]


def test_row_limit_is_413_live(untouched, predict_url, built_card):
    limit = MODEL_CONFIG.max_rows
    resp = post(predict_url, {"instances": [[0.0] * built_card.n_features] * (limit + 1)}, "application/json")
    assert resp.status_code == 413
    assert resp.json()["type"] == "too_many_rows" and f"limit is {limit}" in resp.json()["message"]


def test_body_over_the_frontend_limit_is_413(untouched, live, predict_url):
    limit = int(live.properties["max_request_size"])
    resp = post(predict_url, b" " * (limit + 1), "application/json")
    assert resp.status_code == 413  # TorchServe's frontend answers before Python sees it


def test_bad_requests_fail_alone_among_concurrent_good_ones(untouched, predict_url, test_split, built_model):
    """With batching on, bad requests share batches with good ones; only they fail."""
    x = test_split["x"]
    with torch.inference_mode():
        expected = torch.softmax(built_model(x), 1)
    jobs = [(i % len(x), i % 3 == 0) for i in range(240)]

    def send(job):
        i, bad = job
        row = x[i].tolist()
        body = {"instances": [row[:9] if bad else row]}
        return job, post(predict_url, body, "application/json")

    with ThreadPoolExecutor(24) as pool:
        for (i, bad), resp in pool.map(send, jobs):
            if bad:
                assert resp.status_code == 400 and resp.json()["type"] == "wrong_shape"
            else:
                assert resp.status_code == 200
                probs = resp.json()["predictions"][0]["probabilities"]
                assert torch.allclose(torch.tensor(list(probs.values())), expected[i], atol=PROBABILITY_ATOL)


def formats(rows: list[list[float]], names: tuple[str, ...]):
    """The same rows in every accepted format: (label, path suffix, body, content type)."""
    npy = io.BytesIO()
    np.save(npy, np.array(rows, dtype=np.float32))
    v2 = {"inputs": [{"name": "x", "shape": [len(rows), len(names)], "datatype": "FP32", "data": sum(rows, [])}]}
    csv_body = ",".join(names) + "\n" + "\n".join(",".join(repr(v) for v in r) for r in rows) + "\n"
    return [
        ("rows", {"instances": rows}, "application/json"),
        ("named", {"instances": [dict(zip(names, r)) for r in rows]}, "application/json"),
        ("v2", v2, "application/json"),
        ("csv", csv_body, "text/csv"),
        ("npy", npy.getvalue(), "application/x-npy"),
    ]


def probabilities_of(answer: dict) -> list[list[float]]:
    if "outputs" in answer:
        out = {o["name"]: o for o in answer["outputs"]}["probabilities"]
        n, c = out["shape"]
        return [out["data"][i * c : (i + 1) * c] for i in range(n)]
    return [list(p["probabilities"].values()) for p in answer["predictions"]]


def test_every_format_gives_the_same_probabilities(untouched, live, predict_url, built_card, test_split):
    """Every format parses to the same float32 rows (bit for bit: tests/unit, tests/reliability);
    the probabilities agree within PROBABILITY_ATOL, since each request may share its forward
    pass with different requests, which changes their last bits."""
    rows = test_split["x"][:5].tolist()
    v2_url = f"{live.inference.url}/v2/models/{built_card.model_name}/infer"
    results = {}
    for label, body, content_type in formats(rows, built_card.feature_names):
        resp = post(predict_url, body, content_type)
        assert resp.status_code == 200, (label, resp.text)
        results[label] = probabilities_of(resp.json())
    resp = post(v2_url, formats(rows, built_card.feature_names)[2][1], "application/json")
    results["v2 endpoint"] = probabilities_of(resp.json())
    reference = np.array(results["rows"])
    for label, probs in results.items():
        np.testing.assert_allclose(np.array(probs), reference, rtol=0, atol=PROBABILITY_ATOL, err_msg=label)


ANSWER_FORMATS = {"npy": "application/x-npy", "columnar": "application/vnd.tabular.columnar+json"}


def answer_probabilities(resp: requests.Response, card) -> list[list[float]]:
    """Probabilities from a bulk answer (.npy or columnar JSON), after checking its names."""
    if resp.headers["Content-Type"].startswith("application/x-npy"):
        assert json.loads(resp.headers["X-Class-Names"]) == list(card.class_names)
        array = np.load(io.BytesIO(resp.content), allow_pickle=False)
        assert array.dtype == np.float32
        return array.tolist()
    doc = resp.json()
    assert doc["class_names"] == list(card.class_names)
    assert doc["labels"] == [card.class_names[int(np.argmax(r))] for r in doc["probabilities"]]
    return doc["probabilities"]


@pytest.mark.parametrize("answer", list(ANSWER_FORMATS))
def test_every_format_gives_the_same_probabilities_in_bulk_answers(untouched, predict_url, built_card, test_split,
                                                                   answer):
    """Accept picks the answer's format whatever the request's: the same probabilities as the
    row answer (within PROBABILITY_ATOL), the model version in a header, errors still JSON."""
    rows = test_split["x"][:5].tolist()
    reference = np.array(probabilities_of(post(predict_url, {"instances": rows}, "application/json").json()))
    for label, body, content_type in formats(rows, built_card.feature_names):
        resp = requests.post(predict_url, data=body if isinstance(body, (bytes, str)) else json.dumps(body),
                             headers={"Content-Type": content_type, "Accept": ANSWER_FORMATS[answer]},
                             timeout=ANSWER_TIMEOUT)
        assert resp.status_code == 200, (label, resp.text)
        assert resp.headers["Content-Type"].startswith(ANSWER_FORMATS[answer]), label
        assert resp.headers["X-Model-Version"] == built_card.version
        np.testing.assert_allclose(np.array(answer_probabilities(resp, built_card)), reference, rtol=0,
                                   atol=PROBABILITY_ATOL, err_msg=label)
    bad = requests.post(predict_url, data=b'{"instances": []}',
                        headers={"Content-Type": "application/json", "Accept": ANSWER_FORMATS[answer]},
                        timeout=ANSWER_TIMEOUT)
    assert bad.status_code == 400 and bad.headers["Content-Type"].startswith("application/json")
    assert bad.json()["type"] == "empty_input"


def test_v2_endpoint_answers_in_the_open_inference_protocol(live, built_card, test_split):
    rows = test_split["x"][:2].tolist()
    body = {"id": "abc-1", "inputs": [{"name": "x", "shape": [2, built_card.n_features],
                                       "datatype": "FP32", "data": sum(rows, [])}]}
    resp = post(f"{live.inference.url}/v2/models/{built_card.model_name}/infer", body, "application/json")
    answer = resp.json()
    assert resp.status_code == 200 and answer["id"] == "abc-1"
    assert answer["model_name"] == built_card.model_name and answer["model_version"] == built_card.version
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["probabilities"]["shape"] == [2, len(built_card.class_names)]
    assert set(outputs["label"]["data"]) <= set(built_card.class_names)


def test_describe_returns_the_model_card(live, built_card):
    url = f"{live.management.url}/models/{built_card.model_name}?customized=true"
    card = requests.get(url, timeout=10).json()[0]["customizedMetadata"]
    assert card["feature_names"] == list(built_card.feature_names)
    assert card["class_names"] == list(built_card.class_names)
    assert card["training_range"] == built_card.training_range
    assert card["version"] == built_card.version and card["metrics"] == built_card.metrics


def test_no_5xx_and_no_worker_restart_after_the_error_tests(untouched, live):
    """Runs last in this module (pytest keeps file order)."""
    before_workers, before_5xx = untouched
    assert workers(live) == before_workers
    assert frontend_metric(live, "Requests5XX") == before_5xx == 0
    assert frontend_metric(live, "Requests4XX") > len(LIVE_ERRORS)
