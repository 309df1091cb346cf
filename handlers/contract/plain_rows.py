"""A plain ``{"instances": [[number, ...], ...]}`` body straight to a float64 array.

orjson builds a Python float per value and numpy then reads them back: for 1,000 rows of 10
features ~650 us of a worker's ~1.5 ms per request (measured in-process, ``make
bench-handler``). simdjson parses the same text in C and hands the numbers over as one buffer
(~200 us), with no Python object per value.

It answers only for bodies that hold nothing but rows of numbers: one object with the one key
"instances", an array per row and none deeper (flattening would hide ``[7]`` in a row), every
row as long as the schema's, all read from the body's punctuation before simdjson parses it.
Anything else, or anything simdjson refuses (booleans, nulls, strings, numbers beyond a double
or a 64-bit integer, invalid JSON), returns None, and the exact path (orjson, then the checks
that name the bad value) decides: the answer and every error stay what they were without it
(tests/unit/test_plain_rows.py checks both paths give the same on random bodies)."""

from __future__ import annotations

import threading

import numpy as np
import simdjson

# Below this many bytes (~10 rows) orjson's path is as fast or faster (measured: 1 row 7 us
# against 9, 20 rows 20-27 against 16-17, 1,000 rows 700 against 380).
MIN_BYTES = 2048


_local = threading.local()


def _parser() -> simdjson.Parser:
    """One parser per thread, made on first use: it keeps its buffers between bodies, and it
    refuses a body while a proxy of the last one lives (threads sharing one would trip that)."""
    parser: simdjson.Parser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    return parser


def plain_rows(raw: bytes, n_features: int) -> np.ndarray | None:
    """The rows as float64 ``[n, n_features]``, or None when the exact path must decide."""
    if len(raw) < MIN_BYTES:
        return None
    if _more_than(raw, b'"', 2):
        return None  # another field, a string, named features: declined before a pass over the body
    n = _rows_in_structure(raw, n_features)
    if n is None:
        return None
    try:
        doc = _parser().parse(raw)
    except (ValueError, RuntimeError, UnicodeDecodeError):
        return None  # invalid JSON, or a number beyond what simdjson holds: the exact path words it
    try:
        return _rows(doc, n, n_features)
    finally:
        del doc  # the parser refuses the next body while a proxy of this one lives


def _rows_in_structure(raw: bytes, n_features: int) -> int | None:
    """The row count when the body's punctuation is exactly that of ``{"key": [[x, ...], ...]}``
    with ``n_features - 1`` commas in every row, else None. One C pass (``bytes.translate``
    keeps only ``[]{},":``) and one comparison: ~50 us per 100 KB, where asking simdjson for
    each row's length cost ~85 (measured). A row of one value and an empty row look alike
    here; the value count tells them apart."""
    structure = raw.translate(None, _NOT_STRUCTURE)
    n, rest = divmod(len(structure) - _FIXED, n_features + 2)
    if n < 1 or rest or structure != _structure(n, n_features):
        return None
    return n


def _structure(n: int, n_features: int) -> bytes:
    row = b"[" + b"," * (n_features - 1) + b"]"
    return b'{"":[' + (row + b",") * (n - 1) + row + b"]}"


_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{},":')
_FIXED = len(b'{"":[' + b"]}") - 1  # around the rows, less the comma the last row has not


def _rows(doc: object, n: int, n_features: int) -> np.ndarray | None:
    if not isinstance(doc, simdjson.Object) or "instances" not in doc:  # its one key, by the punctuation
        return None
    rows = doc["instances"]
    if not isinstance(rows, simdjson.Array):  # the punctuation says it is; simdjson's type says so too
        return None
    try:
        values = np.frombuffer(rows.as_buffer(of_type="d"), dtype=np.float64)
    except TypeError:  # a boolean or null among the values
        return None
    finally:
        del rows
    if values.size != n * n_features:  # an empty row where one value belongs
        return None
    return values.reshape(n, n_features)


def _more_than(raw: bytes, char: bytes, most: int) -> bool:
    """Whether ``char`` occurs more than ``most`` times: searches (memchr), where bytes.count
    walks every byte in Python's own loop (~80 us per 200 KB, measured)."""
    at = -1
    for _ in range(most + 1):
        at = raw.find(char, at + 1)
        if at < 0:
            return False
    return True
