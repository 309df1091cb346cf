"""The request contract: parse every accepted format into one float32 tensor, or say
exactly what is wrong and where. Pure functions, no TorchServe, so unit and property
tests call them directly.

One module per concern: ``dispatch`` (content type and top-level field), one module per
input format (``instances``, ``v2``, ``csv_rows``, ``npy_rows``), ``validation`` (the
error, the schema, value checks) and ``responses`` (answer bodies, encoding). Callers
import from ``handlers.contract``; the names below are its public surface.
"""

from handlers.contract.csv_rows import rows_from_csv
from handlers.contract.dispatch import (
    ACCEPTED,
    CSV,
    JSON,
    NPY,
    media_type,
    parse_json,
    parse_request,
    unsupported,
)
from handlers.contract.instances import rows_from_instances
from handlers.contract.npy_rows import NPY_MAGIC, rows_from_npy
from handlers.contract.responses import ARRAY, COLUMNAR, COLUMNS, ROWS, Responder, answer_format, encode
from handlers.contract.v2 import V2_DATATYPES, parse_v2
from handlers.contract.validation import FLOAT32_MAX, Parsed, RequestError, Schema, bad, to_tensor

__all__ = [
    "ACCEPTED",
    "ARRAY",
    "COLUMNAR",
    "COLUMNS",
    "ROWS",
    "CSV",
    "FLOAT32_MAX",
    "JSON",
    "NPY",
    "NPY_MAGIC",
    "V2_DATATYPES",
    "Parsed",
    "RequestError",
    "Responder",
    "Schema",
    "answer_format",
    "bad",
    "encode",
    "media_type",
    "parse_json",
    "parse_request",
    "parse_v2",
    "rows_from_csv",
    "rows_from_instances",
    "rows_from_npy",
    "to_tensor",
    "unsupported",
]
