"""Rows of a table instead of a request body: the same rules, one verdict per row.

The service refuses a whole request at its first bad value; a table of a billion rows must score
every good row and mark each bad one. Two pure pieces make the request parsers serve a table:

- ``rows_from_columns``: one array per feature (how Spark's Arrow batches and pandas hand over a
  typed table) to float32 rows, by the request parsers' own checks (``_checked``: NaN, infinities,
  values float32 cannot hold, values far outside the training range), string cells read as the
  CSV parser reads them.
- ``locate``: any parser (this one, or ``rows_from_csv`` over a batch of CSV lines) applied to a
  batch, and where it refuses, to halves of it until each refused row stands alone with the
  error the service would give it. A valid batch costs one vectorised call; k bad rows cost
  O(k log n) calls, so the rules are never re-implemented row by row here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from handlers.contract.csv_rows import _is_number
from handlers.contract.validation import RequestError, Schema, _checked, _kind, bad

# what locate slices: a list of CSV lines, or a 2-D array of cells (rows first)
Items = Sequence[Any] | np.ndarray
Parser = Callable[[Any], torch.Tensor]  # a slice of the items to float32 rows, or a RequestError


@dataclass(frozen=True)
class Located:
    """A batch's verdict: float32 rows [n, F] (zeros where refused) and each row's error or None."""

    rows: np.ndarray
    errors: list[RequestError | None]

    @property
    def valid(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)


def rows_from_columns(columns: Sequence[np.ndarray], schema: Schema) -> torch.Tensor:
    """One array per feature, in feature order, to float32 [n, F]; a RequestError names the first
    bad column (and ``locate`` narrows it to the row). Numeric arrays go straight to the value
    checks; object arrays (strings, nulls) are read like CSV cells, a null is refused as in JSON."""
    if len(columns) != schema.n_features:
        raise bad("wrong_shape", f"expected {schema.n_features} feature columns, got {len(columns)}")
    n = len(columns[0]) if columns else 0
    x = np.empty((n, schema.n_features), dtype=np.float64)
    for j, column in enumerate(columns):
        x[:, j] = _numbers(np.asarray(column), schema.feature_names[j])
    names = schema.feature_names
    return _checked(x, schema, lambda i, j: f"column {names[j]}")


def _numbers(column: np.ndarray, name: str) -> np.ndarray:
    if column.dtype.kind in "fiu":
        return column
    cells = column.tolist()
    for cell in cells:
        if not _readable(cell):
            what = f"{cell!r} is not a number" if isinstance(cell, str) else f"expected a number, got {_kind(cell)}"
            raise bad("invalid_value", f"column {name}: {what}")
    return np.array(cells, dtype=np.float64)  # text cells as the CSV parser converts them


def _readable(cell: Any) -> bool:
    """A number (never a boolean, as in JSON) or text the CSV parser reads as one."""
    if isinstance(cell, str):
        return _is_number(cell)
    return isinstance(cell, (int, float, np.number)) and not isinstance(cell, (bool, np.bool_))


def locate(items: Items, parse: Parser, n_features: int) -> Located:
    """``parse`` over the whole batch, then over halves of any part it refuses, down to single
    rows: each refused row gets the error ``parse`` gives it alone. A parse that answers another
    number of rows than it was given (the CSV parser skips lines of empty cells) counts as refused."""
    rows = np.zeros((len(items), n_features), dtype=np.float32)
    errors: list[RequestError | None] = [None] * len(items)
    pending = [(0, len(items))] if len(items) else []
    while pending:
        start, stop = pending.pop()
        try:
            got = parse(items[start:stop])
            if got.shape[0] != stop - start:
                raise bad("wrong_shape", f"{stop - start} rows given, {got.shape[0]} read")
            rows[start:stop] = got.numpy()
        except RequestError as exc:
            if stop - start == 1:
                errors[start] = exc.detached()
            else:
                middle = (start + stop) // 2
                pending += [(middle, stop), (start, middle)]
    return Located(rows, errors)
