"""Open Inference Protocol (KServe v2): one input tensor of shape [rows, features]."""

from __future__ import annotations

from typing import Any

from handlers.contract.validation import Parsed, Schema, _kind, bad, to_tensor

V2_DATATYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)


def parse_v2(doc: dict[str, Any], schema: Schema, suspect: bool = True) -> Parsed:
    inputs = doc["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise bad("invalid_request", "inputs: expected a non-empty array of input tensors")
    if len(inputs) != 1:
        raise bad("invalid_request", f"inputs: expected exactly one input tensor, got {len(inputs)}")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise bad("invalid_request", f"inputs[0]: expected an object, got {_kind(tensor)}")
    for key in ("name", "shape", "datatype", "data"):
        if key not in tensor:
            raise bad("missing_field", f"inputs[0]: missing field {key!r}")
    datatype = tensor["datatype"]
    if not isinstance(datatype, str) or datatype not in V2_DATATYPES:  # a list or object is unhashable
        raise bad(
            "invalid_request",
            f"inputs[0].datatype: {datatype!r} is not a numeric type; use FP32",
        )
    shape = tensor["shape"]
    n_features = schema.n_features
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise bad("wrong_shape", f"inputs[0].shape: expected [rows, {n_features}], got {shape!r}")
    if shape[1] != n_features:
        raise bad("wrong_shape", f"inputs[0].shape: expected {n_features} features, got {shape[1]}")
    n = shape[0]
    schema.check_rows(n, "inputs[0]")
    data = tensor["data"]
    if not isinstance(data, list):
        raise bad("invalid_request", f"inputs[0].data: expected an array, got {_kind(data)}")
    if data and isinstance(data[0], list):
        rows = data  # nested [n][F], as some clients send it
    else:
        if len(data) != n * n_features:
            raise bad(
                "wrong_shape",
                f"inputs[0].data: shape {shape} needs {n * n_features} values, got {len(data)}",
            )
        rows = [data[i * n_features : (i + 1) * n_features] for i in range(n)]
    if len(rows) != n:
        raise bad("wrong_shape", f"inputs[0].data: shape {shape} needs {n} rows, got {len(rows)}")
    x = to_tensor(
        rows,
        schema,
        suspect,
        lambda i, j: f"inputs[0].data[{i * n_features + j}] (row {i}, {schema.feature_names[j]})",
        lambda i: f"inputs[0].data[{i}]",
    )
    if datatype.startswith(("INT", "UINT")) and not bool((x == x.round()).all()):
        raise bad("invalid_value", f"inputs[0].data: datatype {datatype} holds non-integer values")
    request_id = doc.get("id")
    return Parsed(x, "v2", str(request_id) if request_id is not None else None)
