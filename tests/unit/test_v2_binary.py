"""The OIP v2 binary tensor data extension without a server: requests built and answers read by
the real ``tritonclient`` (its own request builder and InferResult), so the bytes are those
tritonclient.http puts on the wire, not this project's idea of them. The live version, through
TorchServe and nginx, is tests/integration/test_v2_binary_live.py."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.http as triton
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from tritonclient.http._utils import _get_inference_request

from handlers.contract import ROWS, RequestError, Responder, Schema, parse_request
from handlers.contract.v2 import V2_OUTPUTS, V2Parsed
from handlers.contract.v2_binary import HEADER, BinaryRequestError, parse_binary
from tests.unit.test_handler import decode, expected_probabilities, load_worker

NAMES = tuple(f"f{i}" for i in range(1, 11))
SCHEMA = Schema(NAMES, max_rows=50)
CLASSES = ("alpha", "beta", "gamma")
RESPONDER = Responder("m", "1.0", CLASSES)


def parse(body: Any, content_type: str | None, schema: Schema, header_length: str | None):
    """The handler's decode step for a request with this Inference-Header-Content-Length."""
    return parse_request(body, content_type, schema, lambda name: header_length if name == HEADER else None)


def render(responder: Responder, parsed, probabilities: torch.Tensor, fmt: str):
    return responder.answer(parsed, probabilities, fmt)


def triton_body(
    x: np.ndarray, outputs: list[tuple[str, bool]] | None = None, binary_input: bool = True, **kwargs: Any
) -> tuple[bytes, str | None]:
    """The body and Inference-Header-Content-Length tritonclient.http sends for rows ``x``."""
    tensor = triton.InferInput("x", list(x.shape), {np.float32: "FP32", np.float64: "FP64"}[x.dtype.type])
    tensor.set_data_from_numpy(x, binary_data=binary_input)
    requested = [triton.InferRequestedOutput(n, binary_data=b) for n, b in outputs] if outputs else None
    body, size = _get_inference_request(
        [tensor], kwargs.get("request_id", ""), requested, 0, False, False, 0, None, kwargs.get("parameters")
    )
    return body, None if size is None else str(size)


def answer(parsed: V2Parsed, probabilities: torch.Tensor) -> tuple[triton.InferResult, str, dict[str, str]]:
    """The rendered answer as tritonclient reads it."""
    body, content_type, headers = render(RESPONDER, parsed, probabilities, ROWS)
    length = headers.get(HEADER)
    return triton.InferResult.from_response_body(body, header_length=None if length is None else int(length)), content_type, headers


def probs(n: int, seed: int = 0) -> torch.Tensor:
    return torch.softmax(torch.randn(n, len(CLASSES), generator=torch.Generator().manual_seed(seed)), 1)


finite_rows = st.integers(1, 50).flatmap(
    lambda n: arrays(np.float32, (n, len(NAMES)), elements=st.floats(-1e6, 1e6, width=32))
)


@settings(max_examples=60, deadline=None)
@given(finite_rows)
def test_binary_rows_parse_to_the_rows_sent(x):
    body, size = triton_body(x)
    assert size is not None
    parsed = parse(body, None, SCHEMA, size)
    assert isinstance(parsed, V2Parsed) and parsed.protocol == "v2"
    assert parsed.rows.dtype == torch.float32 and torch.equal(parsed.rows, torch.from_numpy(x))


@settings(max_examples=30, deadline=None)
@given(finite_rows)
def test_binary_and_json_forms_of_the_same_rows_parse_alike(x):
    binary = parse(*triton_body(x)[:1], None, SCHEMA, triton_body(x)[1])
    body, size = triton_body(x, binary_input=False)
    assert size is None  # no binary input: tritonclient sends plain JSON and no header
    as_json = parse_request(body, "application/json", SCHEMA)
    assert torch.equal(binary.rows, as_json.rows)


def test_float64_rows_are_accepted_as_float32():
    x = np.random.default_rng(0).random((3, len(NAMES)))
    parsed = parse(*triton_body(x)[:1], None, SCHEMA, triton_body(x)[1])
    assert torch.equal(parsed.rows, torch.from_numpy(x.astype(np.float32)))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.sampled_from([None, *[[(n, b) for n in V2_OUTPUTS] for b in (True, False)]]))
def test_binary_answers_read_back_in_tritonclient(n, outputs):
    """Every output, binary or JSON, reads back in tritonclient as the probabilities, labels and
    class ids the JSON answer carries."""
    x = np.zeros((n, len(NAMES)), np.float32)
    parsed = parse(*triton_body(x, outputs)[:1], None, SCHEMA, triton_body(x, outputs)[1])
    p = probs(n, n)
    result, _, _ = answer(parsed, p)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), p.numpy())
    ids = p.argmax(1).numpy()
    np.testing.assert_array_equal(result.as_numpy("class_id"), ids)
    assert [s.decode() if isinstance(s, bytes) else s for s in result.as_numpy("label")] == [CLASSES[i] for i in ids]


def test_no_outputs_named_means_every_output_binary():
    """tritonclient sets binary_data_output when the caller names no outputs."""
    x = np.zeros((2, len(NAMES)), np.float32)
    result, content_type, headers = answer(parse(*triton_body(x)[:1], None, SCHEMA, triton_body(x)[1]), probs(2))
    assert content_type == "application/octet-stream" and HEADER in headers
    head = result.get_response()
    assert [o["name"] for o in head["outputs"]] == list(V2_OUTPUTS)
    assert all("data" not in o and o["parameters"]["binary_data_size"] > 0 for o in head["outputs"])
    assert head["outputs"][0]["parameters"]["class_names"] == list(CLASSES)


def test_only_the_requested_outputs_are_answered_in_their_order():
    x = np.zeros((2, len(NAMES)), np.float32)
    outputs = [("class_id", False), ("probabilities", True)]
    result, _, _ = answer(parse(*triton_body(x, outputs)[:1], None, SCHEMA, triton_body(x, outputs)[1]), probs(2))
    head = result.get_response()
    assert [o["name"] for o in head["outputs"]] == ["class_id", "probabilities"]
    assert "data" in head["outputs"][0] and "binary_data_size" in head["outputs"][1]["parameters"]


def test_binary_input_json_output_is_plain_json():
    x = np.zeros((2, len(NAMES)), np.float32)
    outputs = [(n, False) for n in V2_OUTPUTS]
    parsed = parse(*triton_body(x, outputs)[:1], None, SCHEMA, triton_body(x, outputs)[1])
    body, content_type, headers = render(RESPONDER, parsed, probs(2), ROWS)
    assert content_type == "application/json" and headers == {}
    assert json.loads(body)["outputs"][0]["data"] == pytest.approx(probs(2).flatten().tolist())


def test_json_request_may_ask_for_binary_outputs():
    x = np.zeros((2, len(NAMES)), np.float32)
    body, size = triton_body(x, [("probabilities", True)], binary_input=False)
    assert size is None
    parsed = parse(body, "application/json", SCHEMA, None)
    result, content_type, _ = answer(parsed, probs(2))
    assert content_type == "application/octet-stream"
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probs(2).numpy())


def test_a_json_v2_request_that_names_no_outputs_is_answered_as_before():
    body = {"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP32", "data": [0.0] * 10}], "id": "7"}
    parsed = parse(json.dumps(body).encode(), "application/json", SCHEMA, None)
    got = render(RESPONDER, parsed, probs(1), ROWS)
    body, content_type, headers = got
    assert content_type == "application/json" and not headers
    outputs = json.loads(body)["outputs"]
    assert [o["name"] for o in outputs] == list(V2_OUTPUTS) and all("data" in o for o in outputs)


def test_the_request_id_comes_back():
    x = np.zeros((1, len(NAMES)), np.float32)
    body, size = triton_body(x, request_id="abc")
    result, _, _ = answer(parse(body, None, SCHEMA, size), probs(1))
    assert result.get_response()["id"] == "abc"


def header_and_bytes(header: dict[str, Any], data: bytes, length: str | None = None) -> tuple[bytes, str]:
    head = json.dumps(header).encode()
    return head + data, str(len(head)) if length is None else length


def tensor(shape: list[int], datatype: str = "FP32", size: int | None = None, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                        "parameters": {"binary_data_size": size}}], **extra}  # fmt: skip


ROW = np.arange(10, dtype="<f4")


def with_value(value: float, at: int = 3) -> bytes:
    row = ROW.copy()
    row[at] = value
    return np.stack([ROW, row]).tobytes()


@pytest.mark.parametrize(
    ("body", "status", "type_", "message"),
    [
        (header_and_bytes(tensor([1, 10], size=40), ROW.tobytes(), "abc"), 400, "invalid_header",
         "Inference-Header-Content-Length: 'abc' is not a byte count"),
        (header_and_bytes(tensor([1, 10], size=40), ROW.tobytes(), "-5"), 400, "invalid_header", "not a byte count"),
        (header_and_bytes(tensor([1, 10], size=40), ROW.tobytes(), "0"), 400, "invalid_header", "Length: 0"),
        (header_and_bytes(tensor([1, 10], size=40), ROW.tobytes(), "100000"), 400, "invalid_header",
         "100000 bytes of JSON header, but the body has only"),
        (header_and_bytes(tensor([1, 10], size=40), ROW.tobytes()[:36]), 400, "wrong_size",
         "add up to 40 bytes, but the body holds 36 after its"),
        (header_and_bytes(tensor([1, 10], size=40), ROW.tobytes() + b"xx"), 400, "wrong_size",
         "add up to 40 bytes, but the body holds 42"),
        (header_and_bytes(tensor([2, 10], size=40), ROW.tobytes()), 400, "wrong_size",
         "binary_data_size: 40 bytes, but shape [2, 10] of FP32 is 80 bytes"),
        (header_and_bytes(tensor([1, 10], "INT64", 80), np.zeros(10, "<i8").tobytes()), 400, "invalid_request",
         "inputs[0].datatype: INT64 is not accepted as binary data; this model takes FP32 [rows, 10]"),
        (header_and_bytes(tensor([1, 10], "BYTES", 40), ROW.tobytes()), 400, "invalid_request",
         "inputs[0].datatype: 'BYTES' is not a numeric type"),
        (header_and_bytes(tensor([1, 10], "FP16", 20), np.zeros(10, "<f2").tobytes()), 400, "invalid_request",
         "FP16 is not accepted as binary data"),
        (header_and_bytes(tensor([1, 9], size=36), ROW.tobytes()[:36]), 400, "wrong_shape",
         "inputs[0].shape: expected 10 features, got 9"),
        (header_and_bytes(tensor([10], size=40), ROW.tobytes()), 400, "wrong_shape",
         "inputs[0].shape: expected [rows, 10], got [10]"),
        (header_and_bytes(tensor([0, 10], size=0), b""), 400, "empty_input", "no rows"),
        (header_and_bytes(tensor([51, 10], size=2040), bytes(2040)), 413, "too_many_rows", "the limit is 50"),
        (header_and_bytes(tensor([2, 10], size=80), with_value(float("nan"))), 400, "invalid_value",
         "inputs[0] binary data, value 13 (row 1, f4): not a finite number"),
        (header_and_bytes(tensor([2, 10], size=80), with_value(float("-inf"), 0)), 400, "invalid_value",
         "value 10 (row 1, f1): not a finite number"),
        (header_and_bytes(tensor([1, 10], size="40"), ROW.tobytes()), 400, "invalid_request",
         "inputs[0].parameters.binary_data_size: expected a byte count, got '40'"),
        (header_and_bytes(tensor([1, 10], size=-40), ROW.tobytes()), 400, "invalid_request", "expected a byte count"),
        ((b"{not json" + ROW.tobytes(), "9"), 400, "invalid_json", "the JSON header (the body's first 9 bytes"),
        (header_and_bytes([1, 2], b""), 400, "missing_field", "expected an object with 'inputs', got array"),
        (header_and_bytes({"inputs": [], "x": 1}, b""), 400, "invalid_request", "inputs: expected a non-empty array"),
        (header_and_bytes({**tensor([1, 10], size=40), "outputs": [{"name": "logits"}]}, ROW.tobytes()), 400,
         "unknown_output", "outputs[0].name: 'logits' is not an output of this model; it answers probabilities"),
        (header_and_bytes({**tensor([1, 10], size=40), "parameters": {"binary_data_output": "yes"}}, ROW.tobytes()),
         400, "invalid_request", "parameters.binary_data_output: expected true or false, got string"),
        # the one input sent as JSON data in a binary-form request: the JSON form's checks
        (header_and_bytes({"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP32", "data": [None] * 10}]}, b""),
         400, "invalid_value", "inputs[0].data[0] (row 0, f1): expected a number, got null"),
    ],
)  # fmt: skip
def test_malformed_binary_requests_get_a_4xx_naming_what_and_where(body, status, type_, message):
    with pytest.raises(BinaryRequestError) as caught:
        parse(*body[:1], None, SCHEMA, body[1])
    error = caught.value
    assert (error.status, error.type) == (status, type_)
    assert message in error.message, error.message
    assert error.to_dict() == {"code": status, "type": type_, "message": error.message, "error": error.message}


def test_values_far_outside_the_training_range_are_refused_as_in_json():
    schema = Schema.bounded(NAMES, 50, {"min": [0.0] * 10, "max": [1.0] * 10}, 10.0)
    body, size = header_and_bytes(tensor([2, 10], size=80), with_value(1e6, 5))
    with pytest.raises(RequestError) as caught:
        parse_binary(body, size, schema)
    assert caught.value.type == "out_of_range" and "value 15 (row 1, f6): 1e+06 is far outside" in caught.value.message


def test_a_body_torchserve_decoded_is_read_as_its_json():
    """Content-Type: application/json and nothing after the JSON: TorchServe hands over a dict."""
    doc = {"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP32", "data": ROW.tolist()}]}
    assert torch.equal(parse_binary(doc, "123", SCHEMA).rows, torch.from_numpy(ROW[None]))


@pytest.fixture(scope="module")
def worker(tiny_artifacts, tmp_path_factory):
    threads = torch.get_num_threads()
    yield load_worker(tiny_artifacts, tmp_path_factory.mktemp("v2_binary"), "tiny", 8)
    torch.set_num_threads(threads)


def binary_request(body: bytes, size: str | None, rid: str) -> dict[str, Any]:
    """A TorchServe request frame as tritonclient's request arrives: no Content-Type."""
    headers = [{"name": HEADER.encode(), "value": size.encode()}] if size is not None else []
    return {"requestId": rid.encode(), "headers": headers,
            "parameters": [{"name": "body", "contentType": "", "value": body}]}  # fmt: skip


def test_in_a_batch_a_bad_binary_request_fails_alone(worker, tiny_artifacts):
    rows = torch.load(tiny_artifacts / "test_split.pt", weights_only=True)["x"][:3]
    x = rows.numpy()
    good = triton_body(x, [("probabilities", True), ("label", True)])
    bad = header_and_bytes(tensor([1, 10], "INT64", 80), bytes(80))
    code, answers = decode(worker.predict([
        binary_request(*good, "a"), binary_request(bad[0], "nope", "b"), binary_request(*bad, "c"),
        binary_request(*good, "d"),
    ]))  # fmt: skip
    assert code == 200
    assert [a.status for a in answers] == [200, 400, 400, 200]
    assert answers[1].json()["type"] == "invalid_header" and answers[1].json()["request_id"] == "b"
    assert "INT64 is not accepted" in answers[2].json()["error"]
    want = expected_probabilities(tiny_artifacts, rows)
    for a in (answers[0], answers[3]):
        assert a.content_type == "application/octet-stream"
        result = triton.InferResult.from_response_body(a.body, header_length=int(a.headers[HEADER]))
        assert torch.allclose(torch.from_numpy(result.as_numpy("probabilities")), want, atol=1e-6)
        class_names = result.get_response()["outputs"][0]["parameters"]["class_names"]
        assert [v.decode() for v in result.as_numpy("label")] == [class_names[i] for i in want.argmax(1)]
