"""Property tests of the request contract: whatever arrives, ``parse_request`` either
returns the right float32 tensor or raises ``RequestError`` (a 4xx), never anything else;
and valid rows survive every format bit for bit."""

from __future__ import annotations

import io
import json
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from handlers.contract import CSV, FLOAT32_MAX, JSON, NPY, Parsed, RequestError, Schema, parse_request

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONTENT_TYPES = [
    JSON,
    "application/json; charset=utf-8",
    "application/vnd.api+json",
    CSV,
    "text/csv; header=present",
    NPY,
    "application/npy",
    "text/plain",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
    "",
    None,
    "APPLICATION/JSON",
    ";;;",
    "a" * 300,
]

# feature names as a user's CSV header could hold them; "f_" keeps "nan"/"inf" out
names = st.lists(st.from_regex(r"f_[a-z0-9_]{0,8}", fullmatch=True), min_size=1, max_size=12, unique=True)
f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
# values a client might send in a cell: mostly numbers, sometimes anything
cell = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**45), max_value=10**45),
    f32,
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)


def check_outcome(body, content_type, schema: Schema) -> Parsed | None:
    """The one allowed behaviour: a Parsed with a sane tensor, or a 4xx RequestError."""
    try:
        parsed = parse_request(body, content_type, schema)
    except RequestError as exc:
        assert 400 <= exc.status < 500 and exc.type and exc.message
        json.dumps(exc.to_dict())  # the error body is always serialisable
        return None
    rows = parsed.rows
    assert isinstance(parsed, Parsed) and rows.dtype == torch.float32
    assert rows.dim() == 2 and 1 <= rows.shape[0] <= schema.max_rows and rows.shape[1] == schema.n_features
    assert bool(torch.isfinite(rows).all())
    return parsed


def oracle(instances, schema: Schema) -> torch.Tensor | None:
    """What an ``instances`` body must parse to, decided independently of the contract."""
    if not isinstance(instances, list) or not 1 <= len(instances) <= schema.max_rows:
        return None
    rows = []
    for row in instances:
        if isinstance(row, dict):
            if set(row) != set(schema.feature_names) or not isinstance(instances[0], dict):
                return None
            row = [row[n] for n in schema.feature_names]
        elif not isinstance(row, list) or isinstance(instances[0], dict):
            return None
        if len(row) != schema.n_features:
            return None
        for v in row:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return None
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if abs(v) > FLOAT32_MAX:
                return None
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64).to(torch.float32)


@FAST
@given(body=st.binary(max_size=600), content_type=st.sampled_from(CONTENT_TYPES), features=names)
def test_any_bytes_in_any_content_type_parse_or_raise_request_error(body, content_type, features):
    check_outcome(body, content_type, Schema(tuple(features), max_rows=50))


@FAST
@given(body=st.text(max_size=300), content_type=st.sampled_from(CONTENT_TYPES))
def test_any_text_parses_or_raises_request_error(body, content_type):
    check_outcome(body, content_type, Schema(("f_a", "f_b", "f_c")))


@FAST
@given(
    features=names,
    data=st.data(),
    shape_noise=st.integers(min_value=-1, max_value=1),
    as_dicts=st.booleans(),
    n_rows=st.integers(min_value=0, max_value=6),
)
def test_instances_parse_to_exactly_what_the_oracle_says(features, data, shape_noise, as_dicts, n_rows):
    """Near-valid bodies (a wrong value, a wrong length, a missing name) hit both branches."""
    schema = Schema(tuple(features), max_rows=5)
    width = max(0, len(features) + shape_noise)
    values = st.one_of(f32, f32, f32, cell)
    rows = data.draw(st.lists(st.lists(values, min_size=width, max_size=width), min_size=n_rows, max_size=n_rows))
    instances: list = rows
    if as_dicts:
        instances = [dict(zip(features, row)) for row in rows]
        if instances and data.draw(st.booleans()):
            instances[-1] = {**instances[-1], data.draw(st.sampled_from(["f_unknown", *features])): 1.0}
    body = json.dumps({"instances": instances}).encode()
    parsed = check_outcome(body, JSON, schema)
    expected = oracle(json.loads(body)["instances"], schema)
    if expected is None:
        assert parsed is None, f"accepted a body the contract forbids: {body[:200]!r}"
    else:
        assert parsed is not None, f"rejected a valid body: {body[:200]!r}"
        assert torch.equal(parsed.rows, expected)


@FAST
@given(doc=st.recursive(cell, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
    st.sampled_from(["instances", "inputs", "name", "shape", "datatype", "data", "id", "f_a", "f_b"]),
    kids, max_size=4), max_leaves=30))
# found by this test in a `make test` run (a TypeError, i.e. a 5xx): pinned so every run checks it
@example(doc={"datatype": [], "name": None, "shape": [], "data": {}})
def test_any_json_document_parses_or_raises_request_error(doc):
    schema = Schema(("f_a", "f_b"), max_rows=10)
    for wrapped in (doc, {"instances": doc}, {"inputs": doc}, {"inputs": [doc]}):
        body = json.dumps(wrapped).encode()
        parsed = check_outcome(body, JSON, schema)
        if parsed is not None and "instances" in wrapped:
            assert torch.equal(parsed.rows, oracle(wrapped["instances"], schema))


@FAST
@given(
    shape=st.lists(st.one_of(st.integers(-3, 12), st.floats(), st.booleans(), st.none(), st.text(max_size=2)), max_size=3),
    datatype=st.sampled_from(["FP32", "FP64", "INT64", "UINT8", "BYTES", "BOOL", "fp32", ""]),
    data=st.lists(st.one_of(f32, cell), max_size=25),
)
def test_v2_bodies_parse_or_raise_request_error(shape, datatype, data):
    schema = Schema(("f_a", "f_b"), max_rows=10)
    body = {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]}
    parsed = check_outcome(json.dumps(body).encode(), JSON, schema)
    if parsed is not None:
        assert list(parsed.rows.shape) == shape


@FAST
@given(
    dtype=st.sampled_from(["<f4", ">f8", "<f2", "<i8", "|u1", "|b1", "<c8", "|S3", "<U2", "<M8[s]"]),
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=3),
    fortran=st.booleans(),
    cut=st.integers(0, 40),
)
def test_npy_bodies_parse_or_raise_request_error(dtype, shape, fortran, cut):
    schema = Schema(("f_a", "f_b", "f_c"), max_rows=10)
    arr = np.ones(shape, dtype=dtype)
    arr = np.asfortranarray(arr) if fortran else arr
    buf = io.BytesIO()
    np.save(buf, arr)
    raw = buf.getvalue()
    check_outcome(raw, NPY, schema)
    check_outcome(raw[: max(0, len(raw) - cut)], NPY, schema)  # truncated


def test_deep_nesting_and_huge_numbers_are_request_errors():
    schema = Schema(("f_a", "f_b"))
    for body in (
        b"[" * 100_000 + b"]" * 100_000,
        b'{"instances": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"instances": [[1' + b"0" * 5000 + b', 1]]}',
        b'{"instances": [[1e400, 1]]}',
        b'{"instances": [[-1e39, 1]]}',
        b'{"instances": [{"f_a": 1e308, "f_b": 1}]}',
    ):
        assert check_outcome(body, JSON, schema) is None, body[:60]


# ---------------------------------------------------------------- exact round trips


def encodings(features: list[str], rows: list[list[float]], rng: random.Random) -> dict[str, tuple[bytes, str]]:
    n, f = len(rows), len(features)
    order = features[:]
    rng.shuffle(order)
    dict_rows = [{name: row[features.index(name)] for name in order} for row in rows]
    header_csv = ",".join(order) + "\n" + "".join(
        ",".join(repr(row[features.index(name)]) for name in order) + "\n" for row in rows
    )
    buf = io.BytesIO()
    np.save(buf, np.array(rows, dtype=np.float32).reshape(n, f))
    flat = [v for row in rows for v in row]
    return {
        "rows": (json.dumps({"instances": rows}).encode(), JSON),
        "named": (json.dumps({"instances": dict_rows}).encode(), JSON),
        "v2 flat": (json.dumps({"inputs": [{"name": "x", "shape": [n, f], "datatype": "FP32", "data": flat}]}).encode(), JSON),
        "v2 nested": (json.dumps({"inputs": [{"name": "x", "shape": [n, f], "datatype": "FP64", "data": rows}]}).encode(), JSON),
        "csv": ("".join(",".join(repr(v) for v in row) + "\n" for row in rows).encode(), CSV),
        "csv header": (header_csv.encode(), "text/csv; charset=utf-8"),
        "npy": (buf.getvalue(), NPY),
    }


@settings(max_examples=150, deadline=None)
@given(
    features=names,
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
)
def test_valid_rows_round_trip_exactly_in_every_format(features, data, seed):
    n = data.draw(st.integers(1, 8))
    rows = data.draw(st.lists(st.lists(f32, min_size=len(features), max_size=len(features)), min_size=n, max_size=n))
    expected = torch.tensor(rows, dtype=torch.float32)
    schema = Schema(tuple(features), max_rows=8)
    for fmt, (body, content_type) in encodings(features, rows, random.Random(seed)).items():
        try:
            parsed = parse_request(body, content_type, schema)
        except RequestError as exc:  # pragma: no cover - the assertion message is the point
            pytest.fail(f"{fmt}: valid rows rejected: {exc.message}")
        assert torch.equal(parsed.rows, expected), fmt
        assert parsed.protocol == ("v2" if fmt.startswith("v2") else "instances"), fmt
