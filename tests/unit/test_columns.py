"""handlers.contract.columns: a table's rows through the request parsers, one verdict per row."""

from __future__ import annotations

import numpy as np
import pytest

from handlers.contract import Schema, bad, rows_from_csv
from handlers.contract.columns import locate, rows_from_columns

SCHEMA = Schema(("a", "b", "c"), max_rows=100)


def parse_columns(part):
    return rows_from_columns(list(part.T), SCHEMA)


def test_a_valid_batch_is_one_call_and_keeps_its_values():
    calls = []
    x = np.arange(30, dtype=np.float64).reshape(10, 3)
    located = locate(x, lambda part: calls.append(len(part)) or parse_columns(part), 3)
    assert calls == [10] and located.valid.all()
    np.testing.assert_array_equal(located.rows, x.astype(np.float32))


def test_each_refused_row_gets_the_error_it_gets_alone():
    x = np.ones((64, 3))
    x[5, 1], x[40, 2], x[63, 0] = np.nan, 1e39, -np.inf
    located = locate(x, parse_columns, 3)
    assert np.flatnonzero(~located.valid).tolist() == [5, 40, 63]
    assert [located.errors[i].message for i in (5, 40, 63)] == [
        "column b: not a finite number", "column c: 1e+39 is outside the float32 range", "column a: not a finite number"]
    assert (located.rows[[5, 40, 63]] == 0).all() and (located.rows[located.valid] == 1).all()


def test_training_range_bounds_refuse_as_out_of_range():
    schema = Schema.bounded(("a", "b", "c"), 100, {"min": [0, 0, 0], "max": [1, 1, 1]}, 10.0)
    x = np.array([[0.5, 0.5, 0.5], [0.5, 50.0, 0.5]])
    located = locate(x, lambda part: rows_from_columns(list(part.T), schema), 3)
    assert located.errors[0] is None and located.errors[1].type == "out_of_range"
    assert located.errors[1].message.startswith("column b: 50 is far outside the training range of b")


@pytest.mark.parametrize(("cell", "message"), [
    ("abc", "column b: 'abc' is not a number"),
    (None, "column b: expected a number, got null"),
    (True, "column b: expected a number, got boolean"),
])
def test_text_columns_are_read_like_csv_cells(cell, message):
    x = np.array([["1", "2.5", "3"], ["4", cell, "6"]], dtype=object)
    located = locate(x, parse_columns, 3)
    np.testing.assert_array_equal(located.rows[0], [1, 2.5, 3])
    assert located.errors[0] is None and located.errors[1].message == message


def test_csv_lines_through_the_service_parser_including_a_line_it_would_skip():
    """A line of empty cells is skipped by the CSV parser: its batch answers fewer rows than it
    was given, which counts as refused, so that line alone is refused rather than shifting rows."""
    lines = ["1,2,3", ",,", "4,5,x", "7,8,9"]
    located = locate(lines, lambda part: rows_from_csv("a,b,c\n" + "\n".join(part) + "\n", SCHEMA), 3)
    assert located.valid.tolist() == [True, False, False, True]
    assert located.errors[1].type == "empty_input" and located.errors[2].message == "line 2, column c: 'x' is not a number"
    np.testing.assert_array_equal(located.rows[[0, 3]], [[1, 2, 3], [7, 8, 9]])


def test_an_empty_batch_and_a_parser_that_refuses_every_row():
    assert locate([], parse_columns, 3).errors == []

    def broken(part):
        raise bad("invalid_value", "every row")

    assert [e.message for e in locate(["x", "y"], broken, 3).errors] == ["every row", "every row"]
