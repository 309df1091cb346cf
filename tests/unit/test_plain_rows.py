"""handlers.contract.plain_rows, the simdjson path for bodies of rows and nothing else, gives
what the exact path (orjson, then the checks that name the bad value) gives: the same rows,
bit for bit, or the same error; and it declines every body that holds anything else."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from handlers.contract import RequestError, Schema, dispatch
from handlers.contract.plain_rows import MIN_BYTES, plain_rows
from model.data import SYNTHETIC_FEATURES

pytestmark = pytest.mark.unit

F = len(SYNTHETIC_FEATURES)
SCHEMA = Schema(tuple(SYNTHETIC_FEATURES), max_rows=300, low=(-1e6,) * F, high=(1e6,) * F)


def body_of(rows: list[str], pad: bool = True) -> bytes:
    """``{"instances": [...]}`` of rows given as their JSON text, padded to the fast path's size."""
    raw = ('{"instances":[' + ",".join(rows) + "]}").encode()
    return raw.ljust(MIN_BYTES) if pad else raw


def row_of(values: list[str]) -> str:
    return "[" + ",".join(values) + "]"


def exact(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor | RequestError:
    with monkeypatch.context() as m:
        m.setattr(dispatch, "plain_rows", lambda raw, n: None)
        return outcome(raw)


def outcome(raw: bytes) -> torch.Tensor | RequestError:
    try:
        return dispatch.parse_json(raw, SCHEMA).rows
    except RequestError as exc:
        return exc


def same(a: torch.Tensor | RequestError, b: torch.Tensor | RequestError) -> bool:
    if isinstance(a, RequestError) or isinstance(b, RequestError):
        return (
            isinstance(a, RequestError)
            and isinstance(b, RequestError)
            and ((a.status, a.type, a.message) == (b.status, b.type, b.message))
        )
    return a.dtype == b.dtype and torch.equal(a, b)


NUMBERS = (
    "0 -0 -0.0 1 -17 3.25 1e3 -2.5E-3 1e-400 9007199254740993 18446744073709551615 -9223372036854775808 "
    "123456789012345678901234567890 1e400 2e5 4e38 0.1 1.7976931348623157e308"
).split()
ODD = ["true", "false", "null", '"1.5"', "[1]", "[]", "{}", '{"a":1}', "NaN", "Infinity", "1.", ".5", "01", "+1",
       "0x10", "1e", "--1"]  # fmt: skip


def number(rng: random.Random) -> str:
    return rng.choice([repr(rng.uniform(-1e3, 1e3)), str(rng.randint(-(10**6), 10**6)), f"{rng.uniform(-1, 1):.3e}"])


def random_body(rng: random.Random) -> bytes:
    """Mostly plain rows, long enough for the fast path, with one of the ways a body can differ."""
    n = rng.randint(1, 40)
    rows = [[number(rng) for _ in range(F)] for _ in range(n)]
    sep = rng.choice([",", ", ", " ,\n"])
    change = rng.randrange(12)
    i, j = rng.randrange(n), rng.randrange(F)
    if change in (1, 10):
        rows[i][j] = rng.choice(ODD if change == 1 else NUMBERS)
    elif change == 2:
        rows[i].pop() if rng.random() < 0.5 else rows[i].append("1")
    elif change == 3:
        rows[i] = [rng.choice(["7", "[7]", "[]"])] if rng.random() < 0.5 else rows[i][:-1] + [f"[{rows[i][-1]}]"]
    text = "{" + rng.choice(["", " ", "\n"]) + '"instances":[' + sep.join("[" + sep.join(r) + "]" for r in rows) + "]}"
    if change == 4:
        text = text[:-1] + ',"id":"x"}'
    elif change == 5:
        text = text[:-1] + ',"instances":[[1]]}'
    elif change == 6:
        text = text[: rng.randrange(1, len(text))]
    elif change == 7:
        text += rng.choice([" x", "}", "\n", " 1"])
    elif change == 8:
        text = "\ufeff" + text
    elif change == 9:
        text = text.replace('"instances"', '"inputs"')
    raw = text.encode()
    return raw + b" " * max(0, MIN_BYTES - len(raw)) if rng.random() < 0.9 else raw


def test_random_bodies_get_what_the_exact_path_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261207)
    taken = 0
    for _ in range(1500):
        raw = random_body(rng)
        fast = outcome(raw)
        assert same(fast, exact(raw, monkeypatch)), raw[:300]
        taken += plain_rows(raw, F) is not None
    assert taken > 200  # the fast path answered a good share of them, not only declined


def test_a_bulk_body_takes_the_fast_path_and_gives_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = np.random.default_rng(0).normal(size=(300, F)) * 100
    raw = json.dumps({"instances": rows.tolist()}).encode()
    values = plain_rows(raw, F)
    assert values is not None
    np.testing.assert_array_equal(values, rows)  # every double read back exactly
    assert same(outcome(raw), exact(raw, monkeypatch))


ONES = ["1"] * F


@pytest.mark.parametrize(
    ("row", "why"),
    [
        (row_of([*ONES[:-1], "[1]"]), "an array in a row that flattening would hide"),
        ("5", "a row that is a number"),
        (row_of([*ONES[:-1], "true"]), "a boolean"),
        (row_of([*ONES[:-1], "null"]), "null"),
        (row_of([*ONES, "1"]), "a long row"),
        (row_of(ONES[:-1]), "a short row"),
        (row_of([*ONES[:-1], "1e400"]), "a number beyond a double"),
    ],
)
def test_it_declines_and_the_exact_path_names_the_place(row: str, why: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = body_of([row_of(ONES)] * 20 + [row])
    assert plain_rows(raw, F) is None, why
    error = outcome(raw)
    assert isinstance(error, RequestError) and error.status == 400 and "instances[20]" in error.message, why
    assert same(error, exact(raw, monkeypatch))


def test_rows_whose_values_add_up_are_still_declined(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flattened, a short row beside a long one, or a number beside a row holding an array, has
    as many values as the schema asks for: only each row's own shape tells them apart."""
    ragged = [row_of(ONES[:-1]), row_of([*ONES, "1"])]
    hidden = [row_of([*ONES, *ONES[:-2], "[1]"]), "5"]
    for rows in (ragged, hidden):
        raw = body_of([row_of(ONES)] * 20 + rows)
        assert plain_rows(raw, F) is None
        error = outcome(raw)
        assert isinstance(error, RequestError) and "instances[20]" in error.message
        assert same(error, exact(raw, monkeypatch))


def test_an_empty_row_of_a_one_feature_schema_is_declined() -> None:
    """``[]`` and ``[7]`` have the same punctuation: the value count decides."""
    raw = body_of(["[7]"] * 600 + ["[]"])
    assert plain_rows(raw, 1) is None
    values = plain_rows(body_of(["[7]"] * 601), 1)
    assert values is not None and values.shape == (601, 1) and (values == 7).all()


def test_small_bodies_are_left_to_orjson() -> None:
    raw = body_of([row_of(ONES)], pad=False)
    assert len(raw) < MIN_BYTES and plain_rows(raw, F) is None


def test_the_parser_is_reused_after_a_declined_body() -> None:
    """simdjson refuses to parse while a proxy of the last body lives: every path drops them."""
    good = body_of([row_of(["2"] * F)] * 30)
    for bad in (good.replace(b"2]", b"true]", 1), good.replace(b"[2", b"[[2", 1), b'{"instances":7}'.ljust(MIN_BYTES)):
        assert plain_rows(bad, F) is None
        values = plain_rows(good, F)
        assert values is not None and values.shape == (30, F) and (values == 2).all()


def test_threads_each_read_their_own_bodies() -> None:
    """A worker reads bodies on one thread; offline scoring or an embedding app may use several."""

    def read(k: int) -> bool:
        raw = body_of([row_of([str(k)] * F)] * 30)
        return all((v := plain_rows(raw, F)) is not None and (v == k).all() for _ in range(200))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(read, range(8)))
