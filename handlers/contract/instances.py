"""``{"instances": [...]}``: rows as arrays in feature order, or objects of named features."""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any

import numpy as np
import torch

from handlers.contract.validation import Schema, _checked, _kind, bad, to_tensor


def rows_from_instances(instances: Any, schema: Schema, suspect: bool = True) -> torch.Tensor:
    if not isinstance(instances, list):
        raise bad("invalid_request", f"instances: expected an array of rows, got {_kind(instances)}")
    schema.check_rows(len(instances), "instances")
    if isinstance(instances[0], dict):
        return _rows_from_dicts(instances, schema, suspect)
    return to_tensor(instances, schema, suspect, _array_place(schema), lambda i: f"instances[{i}]")


def rows_from_plain(values: np.ndarray, schema: Schema) -> torch.Tensor:
    """Rows ``handlers.contract.plain_rows`` read: the same limit and value checks, the same places."""
    schema.check_rows(len(values), "instances")
    return _checked(values, schema, _array_place(schema))


def _array_place(schema: Schema) -> Callable[[int, int], str]:
    return lambda i, j: f"instances[{i}][{j}] ({schema.feature_names[j]})"


def _rows_from_dicts(instances: list[Any], schema: Schema, suspect: bool) -> torch.Tensor:
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
