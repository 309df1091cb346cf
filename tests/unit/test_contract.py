"""The request contract as pure functions: every format, every error type."""

import io
import json

import numpy as np
import orjson
import pytest
import torch

from handlers.contract import (
    ARRAY,
    COLUMNAR,
    COLUMNS,
    CSV,
    JSON,
    NPY,
    Parsed,
    RequestError,
    Responder,
    Schema,
    answer_format,
    encode,
    parse_request,
)
from handlers.contract import ROWS as ROW_ANSWER
from model.data import SYNTHETIC_CLASSES, SYNTHETIC_FEATURES

SCHEMA = Schema(SYNTHETIC_FEATURES, max_rows=50)
ROWS = [[float(i * 10 + j) + 0.25 for j in range(10)] for i in range(3)]


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def csv_text(rows, header=None) -> str:
    lines = [",".join(header)] if header else []
    lines += [",".join(repr(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def v2(rows, **overrides):
    tensor = {"name": "x", "shape": [len(rows), 10], "datatype": "FP32", "data": sum(rows, [])}
    tensor.update(overrides)
    return {"id": "req-1", "inputs": [tensor]}


def parse(body, content_type=JSON):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    return parse_request(body, content_type, SCHEMA)


def error_of(body, content_type=JSON) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse(body, content_type)
    return info.value


# ---------------------------------------------------------------- formats


def test_all_formats_give_the_same_tensor():
    expected = torch.tensor(ROWS, dtype=torch.float32)
    named = [dict(zip(reversed(SYNTHETIC_FEATURES), reversed(row))) for row in ROWS]  # order-free
    shuffled = list(reversed(SYNTHETIC_FEATURES))
    bodies = [
        (json.dumps({"instances": ROWS}), JSON),
        (json.dumps({"instances": named}), JSON),
        (json.dumps(v2(ROWS)), JSON),
        (json.dumps(v2(ROWS, data=ROWS)), JSON),  # nested data is accepted too
        (csv_text(ROWS), CSV),
        (csv_text([list(reversed(r)) for r in ROWS], header=shuffled), CSV),
        (npy(np.array(ROWS, dtype=np.float32)), NPY),
        (npy(np.array(ROWS, dtype=np.float64)), NPY),
        ({"instances": ROWS}, JSON),  # TorchServe already decoded the JSON
    ]
    for body, content_type in bodies:
        if isinstance(body, str):
            body = body.encode()
        parsed = parse_request(body, content_type, SCHEMA)
        assert torch.equal(parsed.rows, expected), (body, content_type)


def test_v2_request_keeps_its_id_and_protocol():
    parsed = parse(v2(ROWS))
    assert parsed.protocol == "v2" and parsed.request_id == "req-1"


def test_content_type_parameters_are_ignored():
    assert parse(json.dumps({"instances": ROWS}).encode(), "application/json; charset=utf-8").rows.shape == (
        3,
        10,
    )


# ---------------------------------------------------------------- errors

ROW = ROWS[0]


def with_value(value):
    return {"instances": [ROW, ROW[:6] + [value] + ROW[7:]]}


def named_with(**changes):
    row = dict(zip(SYNTHETIC_FEATURES, ROW))
    row.update(changes)
    return {"instances": [{k: v for k, v in row.items() if v is not ...}]}


ERRORS = [
    # (id, body, content type, status, type, message fragment)
    ("not json", b'{"instances": [[1,2', JSON, 400, "invalid_json", "not valid JSON"),
    ("empty body", b"", JSON, 400, "invalid_json", "empty"),
    ("wrong content type", b"x", "image/png", 415, "unsupported_media_type", "'image/png'"),
    ("form data", b"a=b", "application/x-www-form-urlencoded", 415, "unsupported_media_type", "curl -d"),
    ("no content type", b"{}", None, 415, "unsupported_media_type", "(none)"),
    ("top-level array", [ROW], JSON, 400, "missing_field", "got array"),
    ("missing instances", {"rows": [ROW]}, JSON, 400, "missing_field", "'instances'"),
    ("instances not a list", {"instances": 5}, JSON, 400, "invalid_request", "instances: expected an array"),
    ("empty list", {"instances": []}, JSON, 400, "empty_input", "instances: no rows"),
    (
        "short row",
        {"instances": [ROW, ROW, ROW, ROW[:9]]},
        JSON,
        400,
        "wrong_shape",
        "instances[3]: expected 10 features, got 9",
    ),
    ("row not a list", {"instances": [ROW, "abc"]}, JSON, 400, "invalid_request", "instances[1]"),
    (
        "string value",
        with_value("7"),
        JSON,
        400,
        "invalid_value",
        "instances[1][6] (f7): expected a number, got string",
    ),
    (
        "boolean",
        with_value(True),
        JSON,
        400,
        "invalid_value",
        "instances[1][6] (f7): expected a number, got boolean",
    ),
    ("null", with_value(None), JSON, 400, "invalid_value", "got null"),
    (
        "NaN",
        b'{"instances": [[1,2,3,4,5,6,NaN,8,9,10]]}',
        JSON,
        400,
        "invalid_value",
        "instances[0][6] (f7): not a finite number",
    ),
    (
        "Infinity",
        b'{"instances": [[1,2,3,4,5,6,7,8,9,-Infinity]]}',
        JSON,
        400,
        "invalid_value",
        "not a finite number",
    ),
    (
        "1e400",
        b'{"instances": [[1,2,3,4,5,6,7,8,9,1e400]]}',
        JSON,
        400,
        "invalid_value",
        "not a finite number",
    ),
    ("beyond float32", with_value(1e39), JSON, 400, "invalid_value", "outside the float32 range"),
    ("huge int", with_value(10**400), JSON, 400, "invalid_value", "outside the float32 range"),
    ("nested value", with_value([1.0]), JSON, 400, "too_deep", "instances[1][6] (f7): nested too deep"),
    (
        "deep nesting",
        b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        JSON,
        400,
        "too_deep",
        "too deep",
    ),
    (
        "named: missing",
        named_with(f3=...),
        JSON,
        400,
        "missing_feature",
        "instances[0]: missing feature 'f3'",
    ),
    ("named: unknown", named_with(colour=1.0), JSON, 400, "unknown_feature", "unknown feature 'colour'"),
    (
        "named: NaN",
        named_with(f7=float("nan")),
        JSON,
        400,
        "invalid_value",
        "instances[0].f7: not a finite number",
    ),
    (
        "named: boolean",
        named_with(f2=False),
        JSON,
        400,
        "invalid_value",
        "instances[0].f2: expected a number",
    ),
    (
        "named then rows",
        {"instances": [dict(zip(SYNTHETIC_FEATURES, ROW)), ROW]},
        JSON,
        400,
        "invalid_request",
        "instances[1]: expected an object of named features",
    ),
    ("too many rows", {"instances": [ROW] * 51}, JSON, 413, "too_many_rows", "51 rows, the limit is 50"),
    ("v2: two inputs", {"inputs": [v2(ROWS)["inputs"][0]] * 2}, JSON, 400, "invalid_request", "exactly one"),
    (
        "v2: no shape",
        {"inputs": [{"name": "x", "datatype": "FP32", "data": ROW}]},
        JSON,
        400,
        "missing_field",
        "'shape'",
    ),
    ("v2: BYTES", v2(ROWS, datatype="BYTES"), JSON, 400, "invalid_request", "not a numeric type"),
    ("v2: wrong width", v2(ROWS, shape=[3, 9]), JSON, 400, "wrong_shape", "expected 10 features, got 9"),
    ("v2: wrong count", v2(ROWS, shape=[4, 10]), JSON, 400, "wrong_shape", "needs 40 values, got 30"),
    (
        "v2: bad value",
        v2([ROW[:4] + ["x"] + ROW[5:]]),
        JSON,
        400,
        "invalid_value",
        "inputs[0].data[4] (row 0, f5): expected a number, got string",
    ),
    ("v2: too many", v2([ROW] * 51), JSON, 413, "too_many_rows", "limit is 50"),
    ("v2: empty", v2([], shape=[0, 10]), JSON, 400, "empty_input", "no rows"),
    (
        "csv: short line",
        csv_text(ROWS[:1]) + "1,2,3\n",
        CSV,
        400,
        "wrong_shape",
        "line 2: expected 10 features, got 3",
    ),
    (
        "csv: text value",
        csv_text(ROWS[:1]) + "1,2,3,4,x,6,7,8,9,10\n",
        CSV,
        400,
        "invalid_value",
        "line 2, column f5: 'x' is not a number",
    ),
    (
        "csv: nan",
        "1,2,3,4,5,6,7,8,nan,10\n",
        CSV,
        400,
        "invalid_value",
        "line 1, column f9: not a finite number",
    ),
    (
        "csv: unknown header",
        "f1,f2,f3,f4,f5,f6,f7,f8,f9,zz\n" + csv_text(ROWS),
        CSV,
        400,
        "unknown_feature",
        "'zz'",
    ),
    ("csv: missing header", "f1,f2,f3,f4,f5,f6,f7,f8,f9,f9\n", CSV, 400, "invalid_csv", "twice"),
    ("csv: empty", "\n\n", CSV, 400, "empty_input", "no rows"),
    ("csv: bad quoting", 'f1,"x\n', CSV, 400, "invalid_csv", "not valid CSV"),
    ("csv: not utf-8", b"\xff\xfe1,2", CSV, 400, "invalid_csv", "not UTF-8"),
    ("csv: too many", csv_text([ROW] * 51), CSV, 413, "too_many_rows", "limit is 50"),
    ("npy: not npy", b"hello", NPY, 400, "invalid_npy", "magic"),
    ("npy: truncated", npy(np.ones((3, 10), np.float32))[:-7], NPY, 400, "invalid_npy", "not a valid .npy"),
    (
        "npy: pickled objects",
        npy(np.array([[1] * 10], dtype=object)),
        NPY,
        400,
        "invalid_npy",
        "allow_pickle",
    ),
    ("npy: strings", npy(np.array([["a"] * 10])), NPY, 400, "invalid_npy", "not a real number type"),
    ("npy: 1-D", npy(np.ones(10, np.float32)), NPY, 400, "wrong_shape", "[10]"),
    (
        "npy: inf",
        npy(np.array([[1.0] * 9 + [np.inf]])),
        NPY,
        400,
        "invalid_value",
        "rows[0][9] (f10): not a finite",
    ),
    ("npy: too many", npy(np.ones((51, 10), np.float32)), NPY, 413, "too_many_rows", "limit is 50"),
    # issue 25: what used to be accepted silently, or answered with a 500
    ("json: instances and inputs", {"instances": [ROW], **v2(ROWS)}, JSON, 400, "invalid_request",
     "body: both 'instances' and 'inputs'"),
    ("json: duplicate top-level key", '{"instances": [[1,2,3,4,5,6,7,8,9,10]], "instances": ' + json.dumps(ROWS) + "}",
     JSON, 400, "invalid_json", "key 'instances' appears twice"),
    ("json: duplicate feature", '{"instances": [' + json.dumps(dict(zip(SYNTHETIC_FEATURES, ROW)))[:-1] + ', "f3": 1}]}',
     JSON, 400, "invalid_json", "key 'f3' appears twice"),
    ("csv: underscore digits", "1_0,2,3,4,5,6,7,8,9,10\n", CSV, 400, "invalid_value", "line 1, column f1: '1_0' is not a number"),
    ("csv: non-ascii digits", "1,2,3,4,5,6,7,8,9,\u0661\u0660\n", CSV, 400, "invalid_value", "line 1, column f10: '\u0661\u0660' is not a number"),
    # (1e30 in an INT8 tensor, the example, is out of the training range too: live, that is its 400)
    ("v2: INT8 holding 1000", v2([[1000.0] + [1.0] * 9], datatype="INT8"), JSON, 400, "invalid_value",
     "inputs[0].data[0] (row 0, f1): 1000 is outside the INT8 range [-128, 127]"),
    ("v2: UINT8 negative", v2([[1.0] * 9 + [-1.0]], datatype="UINT8"), JSON, 400, "invalid_value",
     "inputs[0].data[9] (row 0, f10): -1 is outside the UINT8 range [0, 255]"),
    ("v2: FP16 overflow", v2([[1.0, 70000.0] + [1.0] * 8], datatype="FP16"), JSON, 400, "invalid_value",
     "inputs[0].data[1] (row 0, f2): 70000 is outside the FP16 range"),
    ("npy: trailing bytes", npy(np.ones((3, 10), np.float32)) + b"junk", NPY, 400, "invalid_npy",
     "4 bytes after the array data"),
    ("npy: longdouble inf", npy(np.array([[np.inf] * 10], dtype=np.longdouble)), NPY, 400, "invalid_npy",
     f"dtype {np.dtype(np.longdouble)}"),
    ("npy: longdouble", npy(np.ones((1, 10), dtype=np.longdouble)), NPY, 400, "invalid_npy", "use float32"),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "type_", "fragment"),
    [e[1:] for e in ERRORS],
    ids=[e[0] for e in ERRORS],
)
def test_bad_requests_get_a_4xx_that_names_the_problem(body, content_type, status, type_, fragment):
    if isinstance(body, str):
        body = body.encode()
    error = error_of(body, content_type)
    assert (error.status, error.type) == (status, type_), error.message
    assert fragment in error.message
    assert error.to_dict() == {"code": status, "type": type_, "message": error.message}


# ---------------------------------------------------------------- responses

RESPONDER = Responder("m", "2.0", SYNTHETIC_CLASSES)
PROBS = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])


def test_instances_response_names_classes_from_the_schema():
    body = RESPONDER.body(Parsed(torch.zeros(2, 10)), PROBS)
    assert body["model_name"] == "m" and body["model_version"] == "2.0"
    first = body["predictions"][0]
    assert first["label"] == SYNTHETIC_CLASSES[1] and first["class_id"] == 1
    assert list(first["probabilities"]) == list(SYNTHETIC_CLASSES)
    assert first["probabilities"][SYNTHETIC_CLASSES[1]] == pytest.approx(0.7)


def test_v2_response_is_an_open_inference_protocol_answer():
    body = RESPONDER.body(Parsed(torch.zeros(2, 10), "v2", "abc"), PROBS)
    outputs = {o["name"]: o for o in body["outputs"]}
    assert body["id"] == "abc"
    assert outputs["probabilities"]["shape"] == [2, 3] and len(outputs["probabilities"]["data"]) == 6
    assert outputs["label"]["data"] == [SYNTHETIC_CLASSES[1], SYNTHETIC_CLASSES[0]]
    assert outputs["class_id"] == {"name": "class_id", "shape": [2], "datatype": "INT64", "data": [1, 0]}


def test_a_one_feature_model_takes_named_features():
    """Found by tests/reliability fuzzing: itemgetter of one name returned a bare value."""
    one = Schema(("only",))
    assert parse_request(b'{"instances": [{"only": 2.5}]}', JSON, one).rows.tolist() == [[2.5]]
    with pytest.raises(RequestError, match=r"instances\[0\]\.only: nested too deep"):
        parse_request(b'{"instances": [{"only": [2.5]}]}', JSON, one)


def test_a_big_endian_npy_body_is_read():
    """Found by tests/reliability fuzzing: torch refused non-native byte order (a 5xx)."""
    rows = np.array(ROWS, dtype=">f8")
    assert torch.equal(parse(npy(rows), NPY).rows, torch.tensor(ROWS, dtype=torch.float32))


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        (None, ROW_ANSWER),
        ("", ROW_ANSWER),
        ("*/*", ROW_ANSWER),
        ("application/json", ROW_ANSWER),
        ("text/html", ROW_ANSWER),
        ("application/x-npy", ARRAY),
        ("Application/X-NPY; q=1", ARRAY),
        ("application/json;q=0.5, application/vnd.tabular.columnar+json", COLUMNS),
        ("application/vnd.tabular.columnar+json, application/x-npy", COLUMNS),
    ],
)
def test_accept_picks_the_answer_format(accept, fmt):
    assert answer_format(accept) == fmt


def test_v2_and_columnar_answers_carry_the_float32_values():
    """Encoded from numpy: each float32 as the shortest text that reads back as that float32."""
    v2 = orjson.loads(RESPONDER.render(Parsed(torch.zeros(2, 10), "v2"), PROBS)[0])
    assert np.array(v2["outputs"][0]["data"], dtype=np.float32).tolist() == PROBS.flatten().tolist()
    body, content_type = RESPONDER.render(Parsed(torch.zeros(2, 10)), PROBS, COLUMNS)
    doc = orjson.loads(body)
    assert content_type == COLUMNAR and doc["labels"] == [SYNTHETIC_CLASSES[1], SYNTHETIC_CLASSES[0]]
    assert np.array(doc["probabilities"], dtype=np.float32).tolist() == PROBS.tolist()
    array, content_type = RESPONDER.render(Parsed(torch.zeros(2, 10)), PROBS, ARRAY)
    assert content_type == "application/x-npy"
    assert np.load(io.BytesIO(array), allow_pickle=False).tolist() == PROBS.tolist()


CSV_BODIES = [
    "1,2,3,4,5,6,7,8,9,10\n",
    "\n\n" + ",".join(SYNTHETIC_FEATURES[::-1]) + "\n10,9,8,7,6,5,4,3,2,1\n\n1,2,3,4,5,6,7,8,9,10",
    "1,2,3,4,5,6,7,8,9,10\r\n1,2,3,4,5,6,7,8,9,10\r\n",
    '"1",2,3,4,5,6,7,8,9,10\n',
    "1,2,3,4,5,6,7,8,9,10\n1,2,3\n",
    "1,2,3,4,5,6,7,8,9,10\n1,2,3,4,5,6,7,8,9,nan\n",
    "1,2,3,4,5,6,7,8,9,10\n1,2,3,4,5,6,7,8,9,1e39\n",
    "1_0,2,3,4,5,6,7,8,9,10\n   \n1,2,3,4,5,6,7,8,9,10\n",
    "f1,f2\n1,2\n",
    "# comment\n1,2,3,4,5,6,7,8,9,10\n",
    "1,2,3,4,5,6,7,8,9,10\n" * 51,
]


@pytest.mark.parametrize("text", CSV_BODIES, ids=range(len(CSV_BODIES)))
def test_the_fast_csv_path_answers_exactly_as_the_csv_module_path(text):
    """numpy's reader takes plain bodies; whatever it takes must equal the exact path's rows,
    and whatever it cannot must leave the answer (or the error) to the exact path."""
    from handlers.contract.csv_rows import _fast_rows, _rows_with_places

    try:
        want: object = _rows_with_places(text, SCHEMA).tolist()
    except RequestError as exc:
        want = exc.to_dict()
    fast = _fast_rows(text, SCHEMA)
    if fast is not None:
        assert fast.dtype == torch.float32 and fast.tolist() == want
    try:
        got: object = parse_request(text.encode(), CSV, SCHEMA).rows.tolist()
    except RequestError as exc:
        got = exc.to_dict()
    assert got == want


@pytest.mark.parametrize("names", [SYNTHETIC_CLASSES, ("only",), ('q"uote\\d', "ünï", "tab\there")])
@pytest.mark.parametrize("n_rows", [1, 2, 15, 16, 17, 1000])
def test_the_row_answer_is_byte_for_byte_the_encoded_body(names, n_rows):
    """The fast row answer (fragments joined around orjson's array text, per row below 16 rows and
    in an object array from 16) against the dicts it replaces."""
    responder = Responder('model "m"', "2.0", names)
    probabilities = torch.softmax(torch.randn(n_rows, len(names), generator=torch.Generator().manual_seed(n_rows)) * 5, 1)
    parsed = Parsed(torch.zeros(n_rows, 10))
    body, content_type = responder.render(parsed, probabilities)
    assert content_type == JSON and body == encode(responder.body(parsed, probabilities))


# ---------------------------------------------------------------- issue 25: limits before parsing, BOM


def test_a_csv_with_a_utf8_byte_order_mark_reads_as_without_it():
    for text in (csv_text(ROWS), csv_text(ROWS, header=SYNTHETIC_FEATURES), "\r\n".join(csv_text(ROWS).splitlines())):
        plain = parse_request(text.encode(), CSV, SCHEMA).rows
        assert torch.equal(parse_request(b"\xef\xbb\xbf" + text.encode(), CSV, SCHEMA).rows, plain), text


OVER_LIMIT = [
    # a body far over the row limit (JSON: past limits.JSON_SLACK too) whose end is broken: a parser that reads it all answers with the
    # break (a 400), one that refuses it before parsing answers 413
    ("csv", (csv_text([ROW] * 60) + 'f1,"x\n').encode(), CSV),
    ("csv: blank-line padding", ("\n" * 60 + 'f1,"x\n').encode(), CSV),
    ("csv: one long line", (",".join(["1"] * 600) + ',"x\n').encode(), CSV),
    ("json", json.dumps({"instances": [ROW] * 200}).encode()[:-1], JSON),
    ("json: v2", json.dumps(v2([ROW] * 200)).encode()[:-1], JSON),
]


@pytest.mark.parametrize(("body", "content_type"), [c[1:] for c in OVER_LIMIT], ids=[c[0] for c in OVER_LIMIT])
def test_a_body_over_the_row_limit_is_refused_before_it_is_parsed(body, content_type):
    error = error_of(body, content_type)
    assert (error.status, error.type) == (413, "too_many_rows"), error.message
    assert "the limit is 50 rows per request" in error.message and "split the request" in error.message


@pytest.mark.parametrize("content_type", [CSV, JSON])
def test_refusing_a_16_mib_body_costs_no_more_memory_than_the_body(content_type):
    """Issue 25: a 16 MiB CSV took +224 MiB and 1.4 s to refuse (every row parsed first)."""
    import tracemalloc

    schema = Schema(SYNTHETIC_FEATURES, max_rows=10_000)
    line = ",".join(["0.125"] * 10)
    if content_type == CSV:
        body = ((line + "\n") * (16 * 2**20 // (len(line) + 1))).encode()
    else:
        body = ('{"instances": [' + ",".join(["[" + line + "]"] * (16 * 2**20 // (len(line) + 3))) + "]}").encode()
    tracemalloc.start()
    try:
        with pytest.raises(RequestError) as info:
            parse_request(body, content_type, schema)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.status == 413
    assert peak < 1.1 * len(body), f"{peak / 2**20:.0f} MiB traced to refuse {len(body) / 2**20:.0f} MiB"


def test_a_body_at_the_row_limit_is_still_read():
    """The limits count lines and values, not guesses: exactly max_rows rows pass, with a header,
    CRLF line ends and trailing blank lines, and in JSON with named features and options."""
    rows = [ROW] * 50
    text = csv_text(rows, header=SYNTHETIC_FEATURES)
    for body in (text, text.replace("\n", "\r\n"), text + "\n\n  \n"):
        assert parse_request(body.encode(), CSV, SCHEMA).rows.shape == (50, 10)
    named = [dict(zip(SYNTHETIC_FEATURES, r)) for r in rows]
    doc = {"instances": named, "target": ["a"] * 50, "baseline": ROW, "id": "x,y,z"}
    assert parse_request(json.dumps(doc, indent=2).encode(), JSON, SCHEMA).rows.shape == (50, 10)
    assert parse_request(json.dumps(v2(rows)).encode(), JSON, SCHEMA).rows.shape == (50, 10)


@pytest.mark.parametrize("body", [b"\n" * (16 << 20), b"1,2,3,4,5,6,7,8,9,10" + b"\n" * (16 << 20)], ids=["blank", "blank tail"])
def test_a_16_mib_run_of_blank_lines_is_not_parsed(body):
    """Blank lines carry no rows, so the limits do not count trailing ones; the parsers then
    spent 5-8 s skipping 16 MiB of them (a Python loop, and the csv module line by line)."""
    import time

    started = time.perf_counter()
    try:
        got: object = parse_request(body, CSV, Schema(SYNTHETIC_FEATURES, max_rows=10_000)).rows.shape
    except RequestError as exc:
        got = exc.type
    assert got == ("empty_input" if body.startswith(b"\n") else (1, 10))
    assert time.perf_counter() - started < 1.0
