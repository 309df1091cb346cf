"""``application/x-npy``: one 2-D array of real numbers, loaded without pickle."""

from __future__ import annotations

import io

import numpy as np
import torch

from handlers.contract.validation import Schema, _checked, bad

NPY_MAGIC = b"\x93NUMPY"


def rows_from_npy(raw: bytes, schema: Schema) -> torch.Tensor:
    if not raw.startswith(NPY_MAGIC):
        raise bad("invalid_npy", "body is not a .npy file (it lacks the \\x93NUMPY magic)")
    stream = io.BytesIO(raw)
    try:
        arr = np.load(stream, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError, ... for bad headers
        raise bad("invalid_npy", f"body is not a valid .npy array: {exc}") from None
    trailing = len(raw) - stream.tell()  # np.load reads the header and exactly the array's bytes
    if trailing:
        raise bad("invalid_npy", f"body: {trailing} bytes after the array data; send one .npy array alone")
    if arr.dtype.kind not in "fiu":
        raise bad("invalid_npy", f"body: .npy dtype {arr.dtype} is not a real number type; use float32")
    if arr.dtype.itemsize > 8:  # longdouble: torch has no such type (it raised, a 500)
        raise bad("invalid_npy", f"body: .npy dtype {arr.dtype} is wider than float64; use float32")
    if arr.ndim != 2 or arr.shape[1] != schema.n_features:
        raise bad(
            "wrong_shape",
            f"body: .npy shape {list(arr.shape)}, expected [rows, {schema.n_features}]",
        )
    schema.check_rows(arr.shape[0], "body")
    names = schema.feature_names
    if not arr.dtype.isnative:  # torch refuses big-endian arrays (a ValueError, then a 5xx)
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return _checked(arr, schema, lambda i, j: f"rows[{i}][{j}] ({names[j]})")
