"""The row limit, checked on the raw body before any parser runs.

A parser builds objects for every value it reads, so a body far over the row limit used to
cost its full parse before the 413 (issue 25, measured in-process: a 16 MiB CSV 1.4 s and
+224 MiB, a 16 MiB JSON 0.5 s and +127 MiB; ~20 of them in one batch outlast
``responseTimeout`` and the worker is killed with every request in its batch). Counting bytes
is one pass in C over memory that is already there, so these bounds cost milliseconds:

- CSV: at most ``max_rows + 1`` lines (the rows and a header; blank lines inside the body
  count, trailing ones are dropped before parsing), and at most ``max_rows + 1`` lines' worth of commas, so one
  endless line is refused too.
- JSON: at most as many values (commas + 1) as ``max_rows`` rows of named features, one
  explanation target per row and ``JSON_SLACK`` for the other fields can hold.

Both are upper bounds on what a request within the limit can hold, so they never refuse one;
what passes them is small enough to parse, and the parsers' own row checks say the exact count.
"""

from __future__ import annotations

from handlers.contract.validation import RequestError, Schema, bad

# commas a JSON request may spend beyond its rows: its id, parameters and explanation baseline
JSON_SLACK = 1024


def bounded_csv(raw: bytes, schema: Schema) -> bytes:
    """The body without its trailing whitespace (no data, but a 16 MiB tail of newlines cost
    the parsers 5-8 s), once its lines and cells are within the limit."""
    body = raw.rstrip()
    newlines = body.count(b"\n")
    if b"\r" in body:  # old Mac line ends; a search, where a second count costs ~0.2 ms per 500 KB
        newlines = max(newlines, body.count(b"\r"))
    lines = newlines + 1 if body else 0
    if lines > schema.max_rows + 1:
        raise _over_limit(schema, f"{lines} lines")
    values = body.count(b",") + lines
    if values > (schema.max_rows + 1) * schema.n_features:
        raise _over_limit(schema, f"{values} comma-separated cells")
    return body


def check_json_size(raw: bytes, schema: Schema) -> None:
    limit = schema.max_rows * (schema.n_features + 1) + JSON_SLACK
    if len(raw) + 1 <= limit:  # fewer bytes than the limit has values: no count (~80 us per 100 KB, measured)
        return
    values = raw.count(b",") + 1
    if values > limit:
        raise _over_limit(schema, f"{values} comma-separated JSON values")


def _over_limit(schema: Schema, what: str) -> RequestError:
    return bad(
        "too_many_rows",
        f"body: {what}, more than {schema.max_rows} rows of {schema.n_features} features hold; "
        f"the limit is {schema.max_rows} rows per request; split the request",
        413,
    )
