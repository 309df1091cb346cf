"""The request contract: parse every accepted format into one float32 tensor, or say
exactly what is wrong and where. Pure functions, no TorchServe, so unit and property
tests call them directly.

Valid input takes a vectorised fast path (one C-level conversion per request); only
when that fails, or the body could hide a boolean, does a per-value walk run to find
the first bad value and name its place.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
import torch

FLOAT32_MAX = float(np.finfo(np.float32).max)
JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
ACCEPTED = (JSON, CSV, NPY)
NPY_MAGIC = b"\x93NUMPY"
V2_DATATYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)


class RequestError(Exception):
    """A client error: HTTP status, a stable type string, and a message naming the place."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.status, "type": self.type, "message": self.message}


def bad(type_: str, message: str, status: int = 400) -> RequestError:
    return RequestError(status, type_, message)


@dataclass(frozen=True)
class Schema:
    """What a request must look like: the features in order and the row limit."""

    feature_names: tuple[str, ...]
    max_rows: int = 10_000
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {n: i for i, n in enumerate(self.feature_names)})

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def check_rows(self, n: int, where: str) -> None:
        if n == 0:
            raise bad("empty_input", f"{where}: no rows; send at least one")
        if n > self.max_rows:
            raise bad(
                "too_many_rows",
                f"{where}: {n} rows, the limit is {self.max_rows} per request; split the request",
                413,
            )


@dataclass(frozen=True)
class Parsed:
    """A valid request: its rows, and how the answer must be shaped."""

    rows: torch.Tensor  # float32 [n, F]
    protocol: str = "instances"  # "instances" | "v2"
    request_id: str | None = None


# ---------------------------------------------------------------- entry point


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_request(body: Any, content_type: str | None, schema: Schema) -> Parsed:
    """Dispatch on the content type. ``body`` is bytes, str, or JSON TorchServe decoded."""
    kind = media_type(content_type)
    if kind == JSON or kind.endswith("+json"):
        return parse_json(body, schema)
    if kind == CSV:
        return Parsed(rows_from_csv(_text(body, "CSV"), schema))
    if kind in (NPY, "application/npy"):
        return Parsed(rows_from_npy(_bytes(body), schema))
    raise unsupported(kind)


def unsupported(content_type: str | None) -> RequestError:
    """415 naming the accepted types (and the usual curl mistake)."""
    kind = media_type(content_type)
    hint = ""
    if kind in ("application/x-www-form-urlencoded", ""):
        hint = " (curl -d sends form data: add -H 'Content-Type: application/json')"
    return bad(
        "unsupported_media_type",
        f"content type {kind or '(none)'!r} is not accepted; use one of {', '.join(ACCEPTED)}{hint}",
        415,
    )


def _bytes(body: Any) -> bytes:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8", "surrogateescape")
    raise bad("invalid_request", "body: expected raw bytes")


def _text(body: Any, what: str) -> str:
    if isinstance(body, str):
        return body
    try:
        return _bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"invalid_{what.lower()}", f"body is not UTF-8 {what}: {exc}") from None


# ---------------------------------------------------------------- JSON


def parse_json(body: Any, schema: Schema) -> Parsed:
    raw: bytes | None = None
    if isinstance(body, (bytes, bytearray, memoryview, str)):
        raw = _bytes(body)
        if not raw.strip():
            raise bad("invalid_json", "body is empty; expected a JSON object")
        try:
            doc = orjson.loads(raw)  # fast; the stdlib below only words the error
        except orjson.JSONDecodeError:
            doc = _stdlib_json(raw)
    else:
        doc = body  # TorchServe already decoded it
    return _parse_doc(doc, raw, schema)


def _stdlib_json(raw: bytes) -> Any:
    """Decode what orjson refused with the stdlib, for its precise error (or its wider
    grammar: NaN, huge integers, other encodings), so answers match the stdlib's."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise bad("too_deep", "body: JSON nested too deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad("invalid_json", f"body is not valid JSON: {exc}") from None


def _parse_doc(doc: Any, raw: bytes | None, schema: Schema) -> Parsed:
    # booleans parse as numbers in the fast path; only a body that spells one needs the walk
    suspect = raw is None or b"true" in raw or b"false" in raw
    if not isinstance(doc, dict):
        raise bad(
            "missing_field",
            f"body: expected a JSON object with 'instances' or 'inputs', got {_kind(doc)}",
        )
    if "instances" in doc:
        return Parsed(rows_from_instances(doc["instances"], schema, suspect))
    if "inputs" in doc:
        return parse_v2(doc, schema, suspect)
    raise bad(
        "missing_field",
        "body: no 'instances' (rows or named features) or 'inputs' (Open Inference Protocol) field",
    )


def rows_from_instances(instances: Any, schema: Schema, suspect: bool = True) -> torch.Tensor:
    if not isinstance(instances, list):
        raise bad("invalid_request", f"instances: expected an array of rows, got {_kind(instances)}")
    schema.check_rows(len(instances), "instances")
    if isinstance(instances[0], dict):
        return _rows_from_dicts(instances, schema, suspect)
    return to_tensor(
        instances,
        schema,
        suspect,
        lambda i, j: f"instances[{i}][{j}] ({schema.feature_names[j]})",
        lambda i: f"instances[{i}]",
    )


def _rows_from_dicts(instances: list, schema: Schema, suspect: bool) -> torch.Tensor:
    names = schema.feature_names
    # itemgetter of one name returns the bare value, not a 1-tuple: a one-feature model
    # would reject {"f": 1.0} and accept {"f": [1.0]}
    getter = itemgetter(*names) if len(names) > 1 else (lambda row: (row[names[0]],))
    n = schema.n_features
    try:
        if any(len(row) != n for row in instances):
            raise KeyError
        rows = [getter(row) for row in instances]
    except (KeyError, TypeError):
        for i, row in enumerate(instances):
            if not isinstance(row, dict):
                raise bad(
                    "invalid_request",
                    f"instances[{i}]: expected an object of named features like instances[0], "
                    f"got {_kind(row)}",
                ) from None
            unknown = [k for k in row if k not in schema.index]
            if unknown:
                raise bad(
                    "unknown_feature",
                    f"instances[{i}]: unknown feature {unknown[0]!r}; the features are {list(names)}",
                ) from None
            missing = [k for k in names if k not in row]
            if missing:
                raise bad("missing_feature", f"instances[{i}]: missing feature {missing[0]!r}") from None
        raise  # pragma: no cover - the walk above always finds the cause
    return to_tensor(
        rows, schema, suspect, lambda i, j: f"instances[{i}].{names[j]}", lambda i: f"instances[{i}]"
    )


# ---------------------------------------------------------------- Open Inference Protocol


def parse_v2(doc: dict, schema: Schema, suspect: bool = True) -> Parsed:
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


# ---------------------------------------------------------------- CSV


def rows_from_csv(text: str, schema: Schema) -> torch.Tensor:
    reader = csv.reader(io.StringIO(text), strict=True)
    records: list[list[str]] = []
    lines: list[int] = []
    try:
        for record in reader:
            if record and any(cell.strip() for cell in record):
                records.append(record)
                lines.append(reader.line_num)
    except csv.Error as exc:
        raise bad("invalid_csv", f"body is not valid CSV: line {reader.line_num}: {exc}") from None
    if not records:
        raise bad("empty_input", "body: the CSV holds no rows")
    order: list[int] | None = None
    if not all(_is_number(cell) for cell in records[0]):
        order = _csv_header_order([cell.strip() for cell in records[0]], schema)
        records, lines = records[1:], lines[1:]
    schema.check_rows(len(records), "body")
    names = schema.feature_names
    try:
        arr = np.array(records, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != schema.n_features:
            raise ValueError
    except ValueError:
        for line, record in zip(lines, records):
            if len(record) != schema.n_features:
                raise bad(
                    "wrong_shape",
                    f"line {line}: expected {schema.n_features} features, got {len(record)}",
                ) from None
            for j, cell in enumerate(record):
                if not _is_number(cell):
                    column = names[order.index(j)] if order else names[j]
                    raise bad(
                        "invalid_value", f"line {line}, column {column}: {cell!r} is not a number"
                    ) from None
        raise bad("invalid_csv", "body: the CSV rows could not be read as numbers") from None
    if order is not None:
        arr = arr[:, order]
    return _checked(arr, lambda i, j: f"line {lines[i]}, column {names[j]}")


def _csv_header_order(header: list[str], schema: Schema) -> list[int]:
    """Column positions of the features, in feature order, from a header row."""
    for name in header:
        if name not in schema.index:
            raise bad(
                "unknown_feature",
                f"line 1: header names unknown feature {name!r}; the features are "
                f"{list(schema.feature_names)}",
            )
    if len(set(header)) != len(header):
        raise bad("invalid_csv", "line 1: the header names a feature twice")
    for name in schema.feature_names:
        if name not in header:
            raise bad("missing_feature", f"line 1: header lacks feature {name!r}")
    return [header.index(name) for name in schema.feature_names]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- .npy


def rows_from_npy(raw: bytes, schema: Schema) -> torch.Tensor:
    if not raw.startswith(NPY_MAGIC):
        raise bad("invalid_npy", "body is not a .npy file (it lacks the \\x93NUMPY magic)")
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError, ... for bad headers
        raise bad("invalid_npy", f"body is not a valid .npy array: {exc}") from None
    if arr.dtype.kind not in "fiu":
        raise bad("invalid_npy", f"body: .npy dtype {arr.dtype} is not a real number type; use float32")
    if arr.ndim != 2 or arr.shape[1] != schema.n_features:
        raise bad(
            "wrong_shape",
            f"body: .npy shape {list(arr.shape)}, expected [rows, {schema.n_features}]",
        )
    schema.check_rows(arr.shape[0], "body")
    names = schema.feature_names
    if not arr.dtype.isnative:  # torch refuses big-endian arrays (a ValueError, then a 5xx)
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return _checked(arr, lambda i, j: f"rows[{i}][{j}] ({names[j]})")


# ---------------------------------------------------------------- values


def to_tensor(
    rows: Sequence,
    schema: Schema,
    suspect: bool,
    where: Callable[[int, int], str],
    row_where: Callable[[int], str],
) -> torch.Tensor:
    """Nested lists to float32 [n, F]; on any doubt walk the values and name the bad one."""
    if not suspect:
        # numpy infers the dtype in C: only plain numbers give a numeric array (strings,
        # nulls and objects do not), and any doubt falls through to the walk below
        try:
            arr = np.array(rows)
        except (TypeError, ValueError, OverflowError):
            arr = None
        if arr is not None and arr.dtype.kind in "fiu" and arr.ndim == 2 and arr.shape[1] == schema.n_features:
            return _checked(arr, where)
    n = schema.n_features
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple)):
            raise bad(
                "invalid_request", f"{row_where(i)}: expected an array of {n} numbers, got {_kind(row)}"
            )
        if len(row) != n:
            raise bad("wrong_shape", f"{row_where(i)}: expected {n} features, got {len(row)}")
        for j, value in enumerate(row):
            if isinstance(value, bool) or value is None or isinstance(value, str):
                raise bad("invalid_value", f"{where(i, j)}: expected a number, got {_kind(value)}")
            if isinstance(value, (list, dict)):
                raise bad(
                    "too_deep", f"{where(i, j)}: nested too deep; expected a number, got {_kind(value)}"
                )
            if not isinstance(value, (int, float)):
                raise bad("invalid_value", f"{where(i, j)}: expected a number, got {_kind(value)}")
            if isinstance(value, int) and abs(value) > FLOAT32_MAX:
                raise bad("invalid_value", f"{where(i, j)}: {value} is outside the float32 range")
    return _checked(torch.tensor(rows, dtype=torch.float64), where)


def _checked(arr: np.ndarray | torch.Tensor, where: Callable[[int, int], str]) -> torch.Tensor:
    """Reject non-finite values and values float32 cannot hold; return float32."""
    if isinstance(arr, np.ndarray):  # one numpy pass for valid input (torch ops cost ~5 us each)
        x = np.asarray(arr, dtype=np.float64)
        if bool((np.abs(x) <= FLOAT32_MAX).all()):  # False for NaN and infinities too
            return torch.from_numpy(x.astype(np.float32))
    t = torch.as_tensor(arr, dtype=torch.float64)
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        i, j = (~finite).nonzero()[0].tolist()
        raise bad("invalid_value", f"{where(i, j)}: not a finite number")
    too_big = t.abs() > FLOAT32_MAX
    if bool(too_big.any()):
        i, j = too_big.nonzero()[0].tolist()
        raise bad("invalid_value", f"{where(i, j)}: {t[i, j].item():g} is outside the float32 range")
    return t.to(torch.float32)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# ---------------------------------------------------------------- responses


@dataclass(frozen=True)
class Responder:
    """Shapes answers; built once per worker from the model card."""

    model_name: str
    model_version: str
    class_names: tuple[str, ...]

    def body(self, parsed: Parsed, probabilities: torch.Tensor) -> dict[str, Any]:
        class_ids = probabilities.argmax(dim=1).tolist()
        if parsed.protocol == "v2":
            return self._v2(parsed, probabilities, class_ids)
        names = self.class_names
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "predictions": [
                {"label": names[c], "class_id": c, "probabilities": dict(zip(names, row))}
                for c, row in zip(class_ids, probabilities.tolist())
            ],
        }

    def _v2(self, parsed: Parsed, probabilities: torch.Tensor, class_ids: list[int]) -> dict[str, Any]:
        n, c = probabilities.shape
        body: dict[str, Any] = {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "outputs": [
                {
                    "name": "probabilities",
                    "shape": [n, c],
                    "datatype": "FP32",
                    "data": probabilities.flatten().tolist(),
                    "parameters": {"class_names": list(self.class_names)},
                },
                {
                    "name": "label",
                    "shape": [n],
                    "datatype": "BYTES",
                    "data": [self.class_names[i] for i in class_ids],
                },
                {"name": "class_id", "shape": [n], "datatype": "INT64", "data": class_ids},
            ],
        }
        if parsed.request_id is not None:
            body["id"] = parsed.request_id
        return body


def encode(body: dict[str, Any]) -> bytes:
    """Compact JSON; orjson is ~4x faster than the stdlib on 1,000-row answers."""
    try:
        return orjson.dumps(body)
    except TypeError:  # what orjson does not take (e.g. integers beyond 64 bits)
        return json.dumps(body, separators=(",", ":")).encode()
