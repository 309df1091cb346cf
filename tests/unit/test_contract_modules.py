"""handlers.contract as a package: every name callers import still comes from
``handlers.contract``, each from the one module that defines it; and the envelope helpers
(handlers.contract.envelopes) as pure functions."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import handlers.contract as contract
from handlers.contract import RequestError, Responder, Schema
from handlers.contract.envelopes import (
    KSERVE_V1,
    KSERVE_V2,
    enveloped_error,
    enveloped_output,
    parse_enveloped,
    service_envelope,
)
from model.data import SYNTHETIC_FEATURES

SCHEMA = Schema(SYNTHETIC_FEATURES, max_rows=5)
ROWS = [[float(i * 10 + j) for j in range(10)] for i in range(2)]

# where each public name lives; callers (tests/, benchmarks/, handlers/) import them from
# handlers.contract, so these are the names the split must keep
HOME = {
    "dispatch": ("ACCEPTED", "CSV", "JSON", "NPY", "media_type", "parse_json", "parse_request", "unsupported"),
    "validation": ("FLOAT32_MAX", "Parsed", "RequestError", "Schema", "bad", "to_tensor"),
    "instances": ("rows_from_instances",),
    "v2": ("V2_DATATYPES", "parse_v2"),
    "csv_rows": ("rows_from_csv",),
    "npy_rows": ("NPY_MAGIC", "rows_from_npy"),
    "responses": ("ARRAY", "COLUMNAR", "COLUMNS", "ROWS", "Responder", "answer_format", "encode"),
}


def test_every_public_name_is_re_exported_from_its_module():
    assert sorted(contract.__all__) == sorted(name for names in HOME.values() for name in names)
    for module_name, names in HOME.items():
        module = importlib.import_module(f"handlers.contract.{module_name}")
        for name in names:
            assert getattr(contract, name) is getattr(module, name), name


def test_the_envelope_comes_from_the_variable_kserve_sets():
    assert service_envelope({}) is None
    assert service_envelope({"TS_SERVICE_ENVELOPE": ""}) is None
    assert service_envelope({"TS_SERVICE_ENVELOPE": "kserve"}) == KSERVE_V1
    assert service_envelope({"TS_SERVICE_ENVELOPE": " KServeV2 "}) == KSERVE_V2
    with pytest.raises(ValueError, match="TS_SERVICE_ENVELOPE='json'"):
        service_envelope({"TS_SERVICE_ENVELOPE": "json"})


def test_v1_envelope_input_is_the_instances():
    parsed = parse_enveloped(ROWS, KSERVE_V1, SCHEMA)
    assert torch.equal(parsed.rows, torch.tensor(ROWS)) and parsed.protocol == "instances"
    named = [dict(zip(SYNTHETIC_FEATURES, row)) for row in ROWS]
    assert torch.equal(parse_enveloped(named, KSERVE_V1, SCHEMA).rows, torch.tensor(ROWS))


@pytest.mark.parametrize(
    ("data", "type_"),
    [(None, "missing_field"), ("rows", "invalid_request"), ([[1.0, True] + [0.0] * 8], "invalid_value")],
)
def test_v1_envelope_input_errors(data, type_):
    with pytest.raises(RequestError) as info:
        parse_enveloped(data, KSERVE_V1, SCHEMA)
    assert (info.value.status, info.value.type) == (400, type_)


def test_v2_envelope_input_is_the_inputs_reshaped_by_the_envelope():
    inputs = [{"name": "x", "shape": [2, 10], "datatype": "FP32", "data": ROWS}]
    parsed = parse_enveloped(inputs, KSERVE_V2, SCHEMA)
    assert torch.equal(parsed.rows, torch.tensor(ROWS)) and parsed.request_id is None
    with pytest.raises(RequestError, match="non-empty array of input tensors"):
        parse_enveloped([], KSERVE_V2, SCHEMA)


def test_too_many_rows_is_a_400_under_an_envelope():
    """TorchServe's frontend turns a raised 413 into 507; the type and message stay."""
    with pytest.raises(RequestError) as info:
        parse_enveloped([[0.0] * 10] * 6, KSERVE_V1, SCHEMA)
    assert info.value.status == 413
    sent = enveloped_error(info.value)
    assert (sent.status, sent.type, sent.message) == (400, "too_many_rows", info.value.message)
    other = RequestError(400, "wrong_shape", "m")
    assert enveloped_error(other) is other


def test_envelope_outputs():
    probabilities = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    responder = Responder("m", "1", ("a", "b"))
    assert enveloped_output(KSERVE_V1, probabilities, responder) == [
        {"label": "b", "class_id": 1, "probabilities": {"a": 0.25, "b": 0.75}},
        {"label": "a", "class_id": 0, "probabilities": {"a": 0.5, "b": 0.5}},
    ]
    (output,) = enveloped_output(KSERVE_V2, probabilities, responder)
    assert isinstance(output, np.ndarray) and output.dtype == np.float32 and output.shape == (2, 2)
    assert output.tolist() == probabilities.tolist()
