"""What every format shares: the client error, the schema a request must fit, the parsed
result, and the value checks that turn nested rows into one float32 tensor.

Valid input takes a vectorised fast path (one C-level conversion per request); only
when that fails, or the body could hide a boolean, does a per-value walk run to find
the first bad value and name its place.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

FLOAT32_MAX = float(np.finfo(np.float32).max)
# a Schema limits rows only when told: the served limit is handler.max_rows (model-config.yaml)
UNLIMITED_ROWS = sys.maxsize


class RequestError(Exception):
    """A client error: HTTP status, a stable type string, and a message naming the place."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.status, "type": self.type, "message": self.message}

    def detached(self) -> RequestError:
        """This error without its traceback and chained exceptions, to be kept as a value: a
        caught exception's traceback holds the frame that keeps it (the batch's list of parsed
        requests, their bodies), a reference cycle that only the cyclic garbage collector frees.
        Workers grew ~1.3 MiB a minute under the soak's mix of invalid requests until it did."""
        self.__traceback__ = self.__context__ = self.__cause__ = None
        return self


def bad(type_: str, message: str, status: int = 400) -> RequestError:
    return RequestError(status, type_, message)


@dataclass(frozen=True)
class Schema:
    """What a request must look like: the features in order, the row limit, and the values
    each feature may take (``low``/``high``; float32's range unless the handler bounds them
    by the training range, ``bounded``)."""

    feature_names: tuple[str, ...]
    max_rows: int = UNLIMITED_ROWS
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    bounds: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {n: i for i, n in enumerate(self.feature_names)})
        n = len(self.feature_names)
        low = np.array(self.low if self.low is not None else [-FLOAT32_MAX] * n, dtype=np.float64)
        high = np.array(self.high if self.high is not None else [FLOAT32_MAX] * n, dtype=np.float64)
        object.__setattr__(self, "bounds", (low, high))

    @classmethod
    def bounded(
        cls, feature_names: tuple[str, ...], max_rows: int, training_range: dict[str, list[float]], ranges: float
    ) -> Schema:
        """Values at most ``ranges`` widths of the training range beyond it, per feature. Far
        beyond, the scaling overflows: the answer was 200 with null probabilities, and int8's
        quantisation raised for the whole batch (issue 25)."""
        lo, hi = np.array(training_range["min"], np.float64), np.array(training_range["max"], np.float64)
        span = np.maximum(hi - lo, 1.0)  # a feature constant in training still gets room
        low = np.maximum(lo - ranges * span, -FLOAT32_MAX)
        high = np.minimum(hi + ranges * span, FLOAT32_MAX)
        return cls(feature_names, max_rows, tuple(low.tolist()), tuple(high.tolist()))

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def holds(self, x: np.ndarray) -> bool:
        """Every value within its feature's bounds (False for NaN and infinities too)."""
        low, high = self.bounds
        return bool(((x >= low) & (x <= high)).all())

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
    """A valid request: its rows, how the answer must be shaped, and the JSON document the
    rows came in (None for CSV and .npy), so the options beside them (an explanation's target
    and baseline) are read without parsing the body again."""

    rows: torch.Tensor  # float32 [n, F]
    protocol: str = "instances"  # "instances" | "v2"
    request_id: str | None = None
    doc: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)


def to_tensor(
    rows: Sequence[Any],
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
            return _checked(arr, schema, where)
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
    return _checked(torch.tensor(rows, dtype=torch.float64), schema, where)


def _checked(arr: np.ndarray | torch.Tensor, schema: Schema, where: Callable[[int, int], str]) -> torch.Tensor:
    """Reject non-finite values, values float32 cannot hold and values outside the schema's
    bounds; return float32."""
    if isinstance(arr, np.ndarray):  # one numpy pass for valid input (torch ops cost ~5 us each)
        x = np.asarray(arr, dtype=np.float64)
        if schema.holds(x):
            return torch.from_numpy(x.astype(np.float32))
        arr = x if x.flags.writeable else x.copy()  # a body's own bytes are read-only: torch warns
    t = torch.as_tensor(arr, dtype=torch.float64)
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        i, j = (~finite).nonzero()[0].tolist()
        raise bad("invalid_value", f"{where(i, j)}: not a finite number")
    too_big = t.abs() > FLOAT32_MAX
    if bool(too_big.any()):
        i, j = too_big.nonzero()[0].tolist()
        raise bad("invalid_value", f"{where(i, j)}: {t[i, j].item():g} is outside the float32 range")
    low, high = (torch.from_numpy(b) for b in schema.bounds)
    outside = (t < low) | (t > high)
    if bool(outside.any()):
        i, j = outside.nonzero()[0].tolist()
        raise bad(
            "out_of_range",
            f"{where(i, j)}: {t[i, j].item():g} is far outside the training range of {schema.feature_names[j]} "
            f"(accepted: {low[j].item():g} to {high[j].item():g}); the model cannot answer it",
        )
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
