"""``application/x-npy``: one 2-D array of real numbers, loaded without pickle."""

from __future__ import annotations

import functools
import io
import math
from typing import Any

import numpy as np
import torch

from handlers.contract.validation import Schema, _checked, bad

NPY_MAGIC = b"\x93NUMPY"


def rows_from_npy(raw: bytes, schema: Schema) -> torch.Tensor:
    if not raw.startswith(NPY_MAGIC):
        raise bad("invalid_npy", "body is not a .npy file (it lacks the \\x93NUMPY magic)")
    try:
        arr, used = _plain(raw) or _load(raw)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError, ... for bad headers
        raise bad("invalid_npy", f"body is not a valid .npy array: {exc}") from None
    trailing = len(raw) - used
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


def _load(raw: bytes) -> tuple[np.ndarray, int]:
    """numpy's whole reader, and its messages: the array and the bytes it read."""
    stream = io.BytesIO(raw)
    arr = np.load(stream, allow_pickle=False)
    return arr, stream.tell()


def _plain(raw: bytes) -> tuple[np.ndarray, int] | None:
    """A version 1.0 file (what ``np.save`` writes) of a dtype without objects, complete: its
    array over the body's bytes, and the bytes it takes. Its header is read by numpy, once per
    distinct header: ``np.load`` parses it with ``ast.literal_eval`` every time, 36 of the 38 us
    it spends on a 1,000-row body (measured). None for anything else, which ``_load`` reads."""
    if raw[6:8] != b"\x01\x00" or len(raw) < 10:
        return None
    start = 10 + int.from_bytes(raw[8:10], "little")
    try:
        shape, fortran, dtype = _header(raw[:start])
    except ValueError:
        return None
    count = math.prod(shape)
    if min(shape, default=0) < 0 or dtype.hasobject or dtype.itemsize == 0 or len(raw) - start < count * dtype.itemsize:
        return None
    arr = np.frombuffer(raw, dtype, count, start).reshape(shape, order="F" if fortran else "C")
    return arr, start + count * dtype.itemsize


@functools.lru_cache(maxsize=16)
def _header(head: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    stream = io.BytesIO(head)
    np.lib.format.read_magic(stream)
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    if stream.tell() != len(head):
        raise ValueError("header length")
    return shape, fortran, dtype
