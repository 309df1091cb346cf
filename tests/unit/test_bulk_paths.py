"""The bulk paths' fast ways give what the plain ways give: the client's chunks cut from blocks
(client.chunks) against a line-by-line reading, its answer rows (client.score.format_rows)
against one f-string loop, the server's .npy reader (handlers.contract.npy_rows) against
``np.load``, the softmax of the transposed logits (handlers.runtimes.probabilities) against
``torch.softmax``, and the one search for JSON booleans against every way to spell one."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from client.api import Scores
from client.chunks import read_chunks
from client.score import format_rows
from handlers import runtimes
from handlers.contract import RequestError, Schema, npy_rows, parse_request
from handlers.contract.dispatch import _BOOLEAN_END
from model.data import SYNTHETIC_FEATURES


def line_by_line(text: bytes, chunk_rows: int) -> tuple[bytes | None, list[tuple[int, bytes, list[int]]]]:
    """What read_chunks must give, by the plainest reading: non-blank lines, the first one a
    header unless every cell is a number, then rows in groups of ``chunk_rows``."""
    lines = text.split(b"\n")
    if text.endswith(b"\n"):
        lines = lines[:-1]
    rows = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        return None, []

    def number(cell: bytes) -> bool:
        try:
            float(cell)
        except ValueError:
            return False
        return True

    header = None if all(number(c) for c in rows[0][1].split(b",")) else rows[0][1] + b"\n"
    rows = rows if header is None else rows[1:]
    return header, [
        (start, b"".join(line + b"\n" for _, line in rows[start : start + chunk_rows]),
         [n for n, _ in rows[start : start + chunk_rows]])
        for start in range(0, len(rows), chunk_rows)
    ]  # fmt: skip


def random_csv(rng: random.Random, blank_share: float) -> bytes:
    lines = []
    for _ in range(rng.randint(0, 60)):
        if rng.random() < blank_share:
            lines.append(rng.choice(["", "  ", "\t", "\r", " \r"]))
        else:
            lines.append(",".join(str(rng.uniform(-1e3, 1e3)) for _ in range(rng.randint(1, 4))))
    if lines and rng.random() < 0.3:
        lines[0] = "a,b,c"
    crlf = rng.random() < 0.2
    text = ("\r\n" if crlf else "\n").join(lines)
    return text.encode() + (b"\n" if rng.random() < 0.7 else b"")


@pytest.mark.parametrize("blank_share", [0.0, 0.05, 0.3], ids=["no blank lines", "some", "many"])
def test_chunks_cut_from_blocks_are_the_line_by_line_chunks(blank_share):
    rng = random.Random(int(blank_share * 100))
    for _ in range(600):
        text = random_csv(rng, blank_share)
        chunk_rows, block = rng.randint(1, 9), rng.randint(1, 64)  # blocks that end mid-line, mid-chunk
        header, stream = read_chunks(io.BytesIO(text), chunk_rows, block)
        got = [(c.first_row, c.body, list(c.file_lines)) for c in stream]
        assert (header, got) == line_by_line(text, chunk_rows), (text, chunk_rows, block)


def test_a_chunk_without_blank_lines_is_a_slice_and_its_lines_a_range():
    text = b"f1,f2\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(10))
    header, stream = read_chunks(io.BytesIO(text), 4)
    chunks = list(stream)
    assert header == b"f1,f2\n"
    assert [c.file_lines for c in chunks] == [range(2, 6), range(6, 10), range(10, 12)]
    assert [c.rows for c in chunks] == [4, 4, 2] and chunks[2].body == b"8,8\n9,9\n"


def test_format_rows_is_the_label_and_the_shortest_float32_text_per_row():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet([1.0, 1.0, 1.0], 500).astype(np.float32)
    names = ("setosa", "b", "class three")
    want = b"".join(
        f"{names[int(np.argmax(row))]},{','.join(repr(float(v)) for v in row)}\n".encode() for row in probabilities
    )
    got = format_rows(Scores("1.0", names, probabilities))
    # repr of the float32 widened to a double is longer; each field must read back as the same float32
    assert got.count(b"\n") == 500
    for got_line, want_line in zip(got.splitlines(), want.splitlines()):
        g, w = got_line.split(b","), want_line.split(b",")
        assert g[0] == w[0]
        assert np.array(g[1:], dtype=np.float32).tolist() == np.array(w[1:], dtype=np.float32).tolist()
        assert all(len(a) <= len(b) for a, b in zip(g[1:], w[1:]))


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize("array", [
    np.arange(30, dtype=np.float32).reshape(3, 10),
    np.arange(30, dtype=">f8").reshape(3, 10),
    np.asfortranarray(np.arange(40, dtype=np.float64).reshape(4, 10)),
    np.ones((0, 10), np.float32),
    np.arange(10, dtype=np.int16),
    np.ones((2, 10), np.longdouble),
], ids=["float32", "big-endian", "fortran order", "no rows", "1-D int16", "longdouble"])  # fmt: skip
def test_the_npy_fast_path_reads_what_np_load_reads(array):
    body = npy(array)
    fast, slow = npy_rows._plain(body), npy_rows._load(body)
    assert fast is not None
    assert fast[1] == slow[1] == len(body)
    assert fast[0].dtype == slow[0].dtype and fast[0].shape == slow[0].shape
    assert np.array_equal(fast[0], slow[0])


@pytest.mark.parametrize("body", [
    npy(np.ones((3, 10), np.float32))[:-7],  # truncated: numpy's own message
    npy(np.array([[1] * 10], dtype=object)),  # pickles: refused by np.load
    npy(np.ones((3, 10), np.float32)).replace(b"\x01\x00", b"\x02\x00", 1),  # another version
    b"\x93NUMPY\x01\x00\xff\xff",  # a header longer than the body
    npy(np.ones((4, 10), np.float32)).replace(b"(4, 10), } ", b"(-4, 10), }"),  # np.load: negative dimensions
], ids=["truncated", "objects", "version 2 bytes", "short header", "negative dimension"])  # fmt: skip
def test_what_the_npy_fast_path_cannot_read_goes_to_np_load(body):
    assert npy_rows._plain(body) is None


def test_a_negative_dimension_gets_numpys_own_message():
    body = npy(np.ones((4, 10), np.float32)).replace(b"(4, 10), } ", b"(-4, 10), }")
    with pytest.raises(RequestError) as info:
        npy_rows.rows_from_npy(body, Schema(SYNTHETIC_FEATURES))
    assert info.value.type == "invalid_npy" and "negative dimensions" in info.value.message


def test_probabilities_are_torchs_softmax_within_float32_rounding():
    logits = torch.randn(5000, 3) * 20
    got = runtimes.probabilities(logits)
    assert got.is_contiguous() and got.shape == logits.shape
    torch.testing.assert_close(got, torch.softmax(logits, dim=1), atol=1e-7, rtol=0)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(5000), atol=1e-6, rtol=0)


@pytest.mark.parametrize("spelled", [
    b'{"instances": [[true, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}',
    b'{"instances": [[1, 2, 3, 4, 5, 6, 7, 8, 9, false]]}',
    b'{"instances": [[1, 2, 3, 4, 5, 6, 7, 8, 9, true\n]]}',
    b'{"instances": [[1, 2, 3, 4, 5, 6, 7, 8, 9,\ttrue ]]}',
    b'{"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP32", "data": [1,2,3,4,5,6,7,8,9,true]}]}',
], ids=["first", "last", "newline after", "spaces around", "v2 data"])  # fmt: skip
def test_a_json_boolean_is_refused_wherever_it_stands(spelled):
    """The fast path reads booleans as numbers; the one search that sends a body to the walk
    (dispatch._BOOLEAN_END) must see every spelling, and exponents must not need it."""
    with pytest.raises(RequestError) as info:
        parse_request(spelled, "application/json", Schema(SYNTHETIC_FEATURES))
    assert info.value.status == 400 and "boolean" in info.value.message
    assert _BOOLEAN_END.search(b'{"instances": [[1e5, 2E-3, 3.5e+2, -1e-7]]}') is None
