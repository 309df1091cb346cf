"""The entry point: pick the decoder from the content type (``DECODERS``, the one table of
request formats) and, for JSON, from the document's top-level field (``instances`` or ``inputs``).

A new request format is one decoder registered in ``DECODERS`` under its media type: it gets
the body, the schema and the request's headers (a lookup by name, for a format whose framing
rides in a header) and returns ``Parsed`` with a ``protocol`` naming its answer's encoder in
``handlers.contract.responses.ENCODERS``, or raises the ``RequestError`` naming what is wrong."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

from handlers.contract.csv_rows import rows_from_csv
from handlers.contract.instances import rows_from_instances, rows_from_plain
from handlers.contract.limits import bounded_csv, check_json_size
from handlers.contract.npy_rows import rows_from_npy
from handlers.contract.plain_rows import plain_rows
from handlers.contract.v2 import parse_v2
from handlers.contract.v2_binary import BINARY, HEADER, parse_binary
from handlers.contract.validation import Parsed, RequestError, Schema, _kind, bad

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
ACCEPTED = (JSON, CSV, NPY)
Header = Callable[[str], str | None]  # a request header by name, None when absent
Decoder = Callable[[Any, Schema, Header], Parsed]


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def no_headers(name: str) -> str | None:
    """The header lookup of a request without headers (tests, offline scoring)."""
    return None


def parse_request(body: Any, content_type: str | None, schema: Schema, header: Header = no_headers) -> Parsed:
    """Dispatch on the content type. ``body`` is bytes, str, or JSON TorchServe decoded.

    The binary v2 form is named by its framing header whatever the content type:
    tritonclient sends none."""
    kind = BINARY if header(HEADER) is not None else media_type(content_type)
    decoder = DECODERS.get(kind)
    if decoder is None:
        if not kind.endswith("+json"):
            raise unsupported(kind)
        decoder = _json
    return decoder(body, schema, header)


def _json(body: Any, schema: Schema, header: Header) -> Parsed:
    return parse_json(body, schema)


def _csv(body: Any, schema: Schema, header: Header) -> Parsed:
    return Parsed(rows_from_csv(_csv_text(bounded_csv(_bytes(body), schema)), schema))


def _npy(body: Any, schema: Schema, header: Header) -> Parsed:
    return Parsed(rows_from_npy(_bytes(body), schema))


def _binary(body: Any, schema: Schema, header: Header) -> Parsed:
    length = header(HEADER)
    if length is None:
        raise bad("invalid_header", f"{BINARY}: the v2 binary form needs an {HEADER} header (the JSON header's bytes)")
    return parse_binary(body, length, schema)


# The request formats by media type (any other ``+json`` type reads as JSON).
DECODERS: dict[str, Decoder] = {JSON: _json, CSV: _csv, NPY: _npy, "application/npy": _npy, BINARY: _binary}


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


def _csv_text(raw: bytes) -> str:
    """UTF-8, with or without the byte order mark spreadsheet programs write first."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise bad("invalid_csv", f"body is not UTF-8 CSV: {exc}") from None


def parse_json(body: Any, schema: Schema) -> Parsed:
    raw: bytes | None = None
    if isinstance(body, (bytes, bytearray, memoryview, str)):
        raw = _bytes(body)
        if not raw.strip():
            raise bad("invalid_json", "body is empty; expected a JSON object")
        check_json_size(raw, schema)
        plain = plain_rows(raw, schema.n_features)
        if plain is not None:  # rows and nothing else: no options, so no document to keep
            return Parsed(rows_from_plain(plain, schema))
        try:
            doc = orjson.loads(raw)  # fast; the stdlib below only words the error
        except orjson.JSONDecodeError:
            doc = _stdlib_json(raw)
        else:
            _check_unique_keys(raw, doc)
    else:
        doc = body  # TorchServe already decoded it
    return _parse_doc(doc, raw, schema)


def _stdlib_json(raw: bytes) -> Any:
    """Decode what orjson refused with the stdlib, for its precise error (or its wider
    grammar: NaN, huge integers, other encodings), so answers match the stdlib's."""
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys)
    except RequestError:
        raise
    except RecursionError:
        raise bad("too_deep", "body: JSON nested too deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad("invalid_json", f"body is not valid JSON: {exc}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """One JSON object, refusing a key given twice: any parser keeps only one of the values."""
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise bad("invalid_json", f"body: the JSON key {key!r} appears twice in one object; give it once")
            seen.add(key)
    return doc


def _check_unique_keys(raw: bytes, doc: Any) -> None:
    """orjson keeps the last value of a key given twice; the stdlib's pairs say which key.
    Only a body with more colons than its decoded objects have keys can hold one, so most
    bodies (rows as arrays: one colon) skip even the count."""
    first = raw.find(b":")
    if first < 0 or raw.find(b":", first + 1) < 0:  # one key at most: a search, where a count costs ~30 us
        return
    colons = raw.count(b":")
    if isinstance(doc, dict) and colons > len(doc) and colons > _key_count(doc):
        _stdlib_json(raw)


def _key_count(doc: Any) -> int:
    """The keys of the objects in a decoded document, to compare with the colons of its text:
    fewer keys than colons means a key given twice or a colon inside a string. Counted in C
    where rows are (a list of objects: their lengths, their values not walked; a list of
    anything else: not walked). An object missed so only sends the body through the exact
    check, never past it: the count can only fall short."""
    count, todo = 0, [doc]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            count += len(item)
            todo.extend(v for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list) and item and set(map(type, item)) == {dict}:
            count += sum(map(len, item))
    return count


# where a JSON true or false can end: its "e", then what may follow a value. A number never has
# an "e" there (its exponent takes digits), so one search, ~28 us per 100 KB where looking for
# both words took ~100 (measured); an "e," inside a string only sends the body to the walk.
_BOOLEAN_END = re.compile(rb"e(?:[,\]}\s]|\Z)")


def _parse_doc(doc: Any, raw: bytes | None, schema: Schema) -> Parsed:
    # booleans parse as numbers in the fast path; only a body that spells one needs the walk
    suspect = raw is None or _BOOLEAN_END.search(raw) is not None
    if not isinstance(doc, dict):
        raise bad(
            "missing_field",
            f"body: expected a JSON object with 'instances' or 'inputs', got {_kind(doc)}",
        )
    if "instances" in doc and "inputs" in doc:
        raise bad("invalid_request", "body: both 'instances' and 'inputs'; send rows in one of them")
    if "instances" in doc:
        return Parsed(rows_from_instances(doc["instances"], schema, suspect), doc=doc)
    if "inputs" in doc:
        return parse_v2(doc, schema, suspect)
    raise bad(
        "missing_field",
        "body: no 'instances' (rows or named features) or 'inputs' (Open Inference Protocol) field",
    )
