"""The handler inside TorchServe's own kserve and kservev2 envelopes, in-process: TorchServe's
loader wraps it exactly as a worker started with TS_SERVICE_ENVELOPE does. The live version,
through HTTP and a TorchServe started from the KServe layout, is
tests/integration/test_kserve.py."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from ts.service import Service

from tests.unit.test_handler import decode, expected_probabilities, load_worker, request


def enveloped_worker(envelope: str, tiny_artifacts, tmp) -> Service:
    return load_worker(tiny_artifacts, tmp, "tiny", 1, envelope=envelope)


@pytest.fixture(scope="module")
def rows(tiny_artifacts) -> torch.Tensor:
    return torch.load(tiny_artifacts / "test_split.pt", weights_only=True)["x"][:4]


@pytest.fixture(scope="module")
def v1(tiny_artifacts, tmp_path_factory) -> Iterator[Service]:
    threads = torch.get_num_threads()
    yield enveloped_worker("kserve", tiny_artifacts, tmp_path_factory.mktemp("v1"))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def v2(tiny_artifacts, tmp_path_factory) -> Iterator[Service]:
    threads = torch.get_num_threads()
    yield enveloped_worker("kservev2", tiny_artifacts, tmp_path_factory.mktemp("v2"))
    torch.set_num_threads(threads)


def one(service: Service, body) -> tuple[int, int, dict | str]:
    """(frame code, answer status, answer body) for a batch of one request."""
    code, answers = decode(service.predict([request(body)]))
    (answer,) = answers
    try:
        return code, answer.status, json.loads(answer.body)
    except ValueError:
        return code, answer.status, answer.body.decode()


def test_v1_answers_one_prediction_per_instance(v1, tiny_artifacts, rows):
    code, status, body = one(v1, {"instances": rows.tolist()})
    assert (code, status) == (200, 200)
    assert list(body) == ["predictions"] and len(body["predictions"]) == len(rows)
    got = torch.tensor([list(p["probabilities"].values()) for p in body["predictions"]])
    assert torch.allclose(got, expected_probabilities(tiny_artifacts, rows), atol=1e-6)


def test_v1_bad_input_is_a_4xx_for_the_whole_batch_of_one(v1):
    code, status, _ = one(v1, {"instances": [[1.0, 2.0]]})
    # PredictionException: the frame's code is the status (TorchServe's "error" body; the
    # frontend writes {"code", "type", "message"} from the exception's message)
    assert code == 400 and status == 400


def test_v1_a_batch_of_two_is_more_than_the_envelope_answers(v1, rows):
    """Why the KServe layout sets batchSize 1: the envelope reads the first request only and
    returns one answer, so TorchServe fails the whole batch."""
    code, _ = decode(v1.predict([request({"instances": rows[:1].tolist()}), request({"instances": rows[1:2].tolist()})]))
    assert code == 503


def test_v2_answers_one_flattened_float32_output(v2, tiny_artifacts, rows):
    tensor = {"name": "features", "shape": list(rows.shape), "datatype": "FP32", "data": rows.flatten().tolist()}
    code, status, body = one(v2, {"id": "r-1", "inputs": [tensor]})
    assert (code, status) == (200, 200)
    assert body["id"] == "r-1" and body["model_name"] == "tiny" and body["model_version"] == "0.1"
    (output,) = body["outputs"]
    assert output["name"] == "features" and output["datatype"] == "FP32" and output["shape"] == [rows.shape[0] * 3]
    got = torch.tensor(output["data"]).reshape(len(rows), 3)
    assert torch.allclose(got, expected_probabilities(tiny_artifacts, rows), atol=1e-6)


def test_v2_a_refused_request_id_does_not_leak_into_the_next_answer(v2, rows):
    bad = {"id": "stale", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    assert one(v2, bad)[:2] == (400, 400)
    good = {"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP32", "data": rows[0].tolist()}]}
    code, status, body = one(v2, good)
    assert (code, status) == (200, 200) and body["id"] == "r"  # TorchServe's request id, not "stale"
