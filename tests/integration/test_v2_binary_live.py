"""The OIP v2 binary tensor data extension against the live TorchServe, spoken by the real
``tritonclient.http`` (its InferenceServerClient, direct and through the nginx proxy rendered
from docker/nginx's template), and malformed bodies sent with raw ``requests``. The same
formats without a server: tests/unit/test_v2_binary.py."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from handlers.contract.v2_binary import HEADER
from tests.conftest import ANSWER_TIMEOUT, PROBABILITY_ATOL
from tests.integration.test_nginx_proxy import proxy, proxy_prefix  # noqa: F401  (the proxy fixture)

OUTPUTS = ("probabilities", "label", "class_id")


@pytest.fixture(scope="module", params=["direct", "nginx"])
def base_url(request, live) -> str:
    """The service's inference address, direct or through the proxy."""
    return live.inference.url if request.param == "direct" else request.getfixturevalue("proxy")


@pytest.fixture(scope="module")
def client(base_url) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(base_url.removeprefix("http://"), network_timeout=ANSWER_TIMEOUT)


@pytest.fixture(scope="module")
def rows(test_split) -> np.ndarray:
    return test_split["x"][:64].numpy()


@pytest.fixture(scope="module")
def json_answer(live, built_card, rows) -> dict:
    """The JSON v2 path's answer for the same rows: the reference every binary answer must equal."""
    tensor = {"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
    resp = requests.post(f"{live.inference.url}/v2/models/{built_card.model_name}/infer",
                         json={"inputs": [tensor]}, timeout=ANSWER_TIMEOUT)  # fmt: skip
    assert resp.status_code == 200, resp.text
    outputs = {o["name"]: o for o in resp.json()["outputs"]}
    assert tuple(outputs) == OUTPUTS
    return outputs


def triton_input(rows: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("x", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return tensor


def assert_equals_json(result: triton.InferResult, json_answer: dict, names=OUTPUTS) -> None:
    """Probabilities within the served tolerance, labels and class ids exactly."""
    if "probabilities" in names:
        want = np.asarray(json_answer["probabilities"]["data"], np.float32).reshape(json_answer["probabilities"]["shape"])
        np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=PROBABILITY_ATOL, rtol=0)
    if "label" in names:
        got = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
        assert got == json_answer["label"]["data"]
    if "class_id" in names:
        assert result.as_numpy("class_id").tolist() == json_answer["class_id"]["data"]


def test_binary_in_binary_out_equals_the_json_answer(client, built_card, rows, json_answer):
    """What tritonclient does by default: binary inputs, no outputs named (binary_data_output)."""
    result = client.infer(built_card.model_name, [triton_input(rows)], request_id="bin-1")
    head = result.get_response()
    assert head["id"] == "bin-1" and head["model_name"] == built_card.model_name
    assert all("binary_data_size" in o["parameters"] and "data" not in o for o in head["outputs"])
    assert head["outputs"][0]["parameters"]["class_names"] == list(built_card.class_names)
    assert_equals_json(result, json_answer)


def test_requested_outputs_mix_binary_and_json(client, built_card, rows, json_answer):
    outputs = [triton.InferRequestedOutput("label", binary_data=False),
               triton.InferRequestedOutput("probabilities", binary_data=True)]  # fmt: skip
    result = client.infer(built_card.model_name, [triton_input(rows)], outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label", "probabilities"]
    assert_equals_json(result, json_answer, ("label", "probabilities"))


def test_binary_in_json_out(client, built_card, rows, json_answer):
    outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in OUTPUTS]
    result = client.infer(built_card.model_name, [triton_input(rows)], outputs=outputs)
    assert all("data" in o for o in result.get_response()["outputs"])
    assert_equals_json(result, json_answer)


def test_json_in_binary_out_needs_its_content_type(client, built_card, rows, json_answer):
    """tritonclient sends a JSON-only request without a Content-Type; this service reads a body
    by its type (a bare body is refused with a 415 naming the accepted ones), so say it."""
    tensors = [triton_input(rows, binary=False)]
    with pytest.raises(InferenceServerException) as refused:
        client.infer(built_card.model_name, tensors)
    assert refused.value.status() == "415"
    result = client.infer(built_card.model_name, tensors, headers={"Content-Type": "application/json"})
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
    assert_equals_json(result, json_answer)


def test_a_refusal_reads_as_a_tritonclient_error(client, built_card, rows):
    """The binary form's error body carries Triton's ``error`` key, which tritonclient shows."""
    tensor = triton.InferInput("x", [len(rows), built_card.n_features - 1], "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(rows[:, 1:]), binary_data=True)
    with pytest.raises(InferenceServerException) as refused:
        client.infer(built_card.model_name, [tensor])
    assert refused.value.status() == "400"
    assert f"inputs[0].shape: expected {built_card.n_features} features" in refused.value.message()


def test_health_and_metadata_are_not_served(client, built_card):
    """Pinned, not wanted: TorchServe 0.12 answers /v2/health/* only with
    TS_OPEN_INFERENCE_PROTOCOL=oip (and then ready is always true, model loaded or not), and has
    no /v2/models/<name> metadata or /v2/models/<name>/ready at all; the proxy serves only infer."""
    assert client.is_server_ready() is False
    assert client.is_model_ready(built_card.model_name) is False
    with pytest.raises(InferenceServerException):
        client.get_model_metadata(built_card.model_name)


def binary_body(built_card, shape, datatype="FP32", data: bytes | None = None, size: int | None = None):
    import json

    n_bytes = len(data) if data is not None else 0
    head = json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                                   "parameters": {"binary_data_size": n_bytes if size is None else size}}]}).encode()  # fmt: skip
    return head + (data or b""), str(len(head))


def malformed(built_card):
    f = built_card.n_features
    row = np.arange(f, dtype="<f4")
    nan = row.copy()
    nan[2] = np.nan
    body, length = binary_body(built_card, [1, f], data=row.tobytes())
    return [
        ("header not a number", body, "twelve", 400, "invalid_header", f"{HEADER}: 'twelve' is not a byte count"),
        ("header past the body", body, str(len(body) + 1), 400, "invalid_header",
         f"{len(body) + 1} bytes of JSON header, but the body has only {len(body)}"),
        ("sizes disagree with the body", body + b"\0\0\0\0", length, 400, "wrong_size",
         f"add up to {4 * f} bytes, but the body holds {4 * f + 4}"),
        ("INT64 for an FP32 model", *binary_body(built_card, [1, f], "INT64", np.zeros(f, "<i8").tobytes()), 400,
         "invalid_request", f"INT64 is not accepted as binary data; this model takes FP32 [rows, {f}]"),
        ("BYTES", *binary_body(built_card, [1, f], "BYTES", row.tobytes()), 400, "invalid_request",
         "'BYTES' is not a numeric type"),
        ("wrong shape", *binary_body(built_card, [2, f], data=row.tobytes()), 400, "wrong_size",
         f"shape [2, {f}] of FP32 is {8 * f} bytes"),
        ("NaN", *binary_body(built_card, [1, f], data=nan.tobytes()), 400, "invalid_value",
         f"inputs[0] binary data, value 2 (row 0, {built_card.feature_names[2]}): not a finite number"),
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(7))
def test_malformed_binary_bodies_get_a_4xx_naming_what(base_url, built_card, case):
    what, body, length, status, type_, message = malformed(built_card)[case]
    resp = requests.post(f"{base_url}/v2/models/{built_card.model_name}/infer", data=body,
                         headers={HEADER: length}, timeout=ANSWER_TIMEOUT)  # fmt: skip
    assert resp.status_code == status, (what, resp.text)
    error = resp.json()
    assert (error["code"], error["type"]) == (status, type_), what
    assert message in error["message"] and error["error"] == error["message"], (what, error)
