"""``text/csv``: one row per line, an optional header naming the features in any order.

(Named csv_rows, not csv, so the module can never shadow the standard library's csv.)
"""

from __future__ import annotations

import csv
import io

import numpy as np
import torch

from handlers.contract.validation import Schema, _checked, bad


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
