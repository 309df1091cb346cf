"""handlers/worker_protocol.py against TorchServe 0.12.0's own reader: the same byte stream
(the frames the Java frontend writes: load and inference messages, many headers, large
bodies, multipart fields, several messages back to back) is decoded by TorchServe's
``retrieve_msg`` with its reader and with the buffered one, and the results must be identical.

The property tests (hypothesis) draw the streams: 1-4 messages, 1-5 requests per batch,
unicode header names and values, payloads past the 64 KiB read size, parameter names that
are not UTF-8, a wrong command byte, reads returning at random sizes and a socket closed at
a random point; both readers must give the same messages and then the same end (TorchServe's
"Frontend disconnected." exit, or the same exception). A real socket pair checks the same
with a writer in pieces."""

from __future__ import annotations

import itertools
import logging
import random
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import ts.protocol.otf_message_handler as otf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers import worker_protocol
from handlers.worker_protocol import TORCHSERVE_READER as ORIGINAL
from handlers.worker_protocol import BufferedReader


def field(data: bytes) -> bytes:
    return struct.pack("!i", len(data)) + data


def load_frame(gpu: int = -1) -> bytes:
    """``_retrieve_load_msg``'s frame, as the frontend's ModelLoadModelRequest encoder writes it."""
    return (b"L" + field(b"tabular_classifier") + field(b"/tmp/model dir") + struct.pack("!i", 64)
            + field(b"tabular_handler.py") + struct.pack("!i", gpu) + field(b"") + struct.pack("!?", True))


def inference_frame(requests: list[tuple[bytes, list[tuple[bytes, bytes]], list[tuple[bytes, bytes, bytes]]]]) -> bytes:
    """A batch: per request its id, headers (name, value) and parameters (name, content type, value)."""
    out = b"I"
    for rid, headers, params in requests:
        out += field(rid)
        for name, value in headers:
            out += field(name) + field(value)
        out += struct.pack("!i", -1)
        for name, ctype, value in params:
            out += field(name) + field(ctype) + field(value)
        out += struct.pack("!i", -1)
    return out + struct.pack("!i", -1)


def stream() -> bytes:
    """Messages back to back, as one worker connection carries them."""
    rng = random.Random(5)
    many_headers = [(f"X-Header-{i}".encode(), bytes(rng.randrange(256) for _ in range(rng.randrange(40))))
                    for i in range(120)]
    large = bytes(rng.randrange(256) for _ in range(300_000))  # larger than the read size, several times
    multipart = [(b"data", b"text/csv", b"f1,f2\n1,2\n"), (b"meta", b"application/json", b'{"a": 1}'),
                 (b"blob", b"application/octet-stream", b"\x00" * 70_000)]
    return b"".join([
        load_frame(),
        load_frame(gpu=0),
        inference_frame([(b"r1", [(b"Content-Type", b"application/json")],
                          [(b"body", b"application/json", b'{"instances": [[1]]}')])]),
        inference_frame([(f"r{i}".encode(), many_headers, [(b"body", b"text/csv", b"1,2,3\n" * i)])
                         for i in range(64)]),
        inference_frame([(b"big", [(b"Content-Type", b"application/x-npy")], [(b"body", b"application/x-npy", large)])]),
        inference_frame([(b"multi", [(b"Content-Type", b"multipart/form-data")], multipart)]),
        inference_frame([(b"empty", [], [(b"body", b"", b"")])]),
    ])


class Chunked:
    """A socket's ``recv`` over fixed bytes, each call returning at most the next of ``sizes``
    bytes: partial reads at every boundary, reproducibly. Empty when the bytes run out."""

    def __init__(self, data: bytes, sizes: Iterator[int]) -> None:
        self.data, self.pos, self.sizes = data, 0, sizes

    def recv(self, n: int) -> bytes:
        take = min(n, next(self.sizes))
        out = self.data[self.pos : self.pos + take]
        self.pos += len(out)
        return out


@contextmanager
def reader(buffered: bool) -> Iterator[None]:
    otf._retrieve_buffer = BufferedReader().read if buffered else ORIGINAL
    try:
        yield
    finally:
        otf._retrieve_buffer = ORIGINAL


def decode_all(conn: object, buffered: bool) -> tuple[list[object], object]:
    """Every message until the stream ends, and how it ended: True for TorchServe's exit with
    code 0 (and its "Frontend disconnected." line), else the exception's type and text."""
    messages: list[object] = []
    with reader(buffered), _logged() as lines:
        try:
            while True:
                messages.append(otf.retrieve_msg(conn))
        except SystemExit as exc:
            return messages, exc.code == 0 and "Frontend disconnected." in lines
        except Exception as exc:  # what TorchServe's parser raises on a bad frame
            return messages, (type(exc).__name__, str(exc))


@contextmanager
def _logged() -> Iterator[list[str]]:
    """The root logger's INFO lines while decoding (caplog is per test, not per example)."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(autouse=True)
def decoded_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TS_DECODE_INPUT_REQUEST", "false")  # as the served config: raw bytes


def test_the_fixed_stream_decodes_to_its_seven_messages():
    data = stream()
    want, end = decode_all(Chunked(data, iter(lambda: len(data), None)), buffered=False)
    assert end is True and len(want) == 7 and [cmd for cmd, _ in want] == [b"L", b"L"] + [b"I"] * 5
    assert decode_all(Chunked(data, iter(lambda: 3, None)), buffered=True) == (want, True)


# ---------------------------------------------------------------- property tests

# payload sizes around the buffer's edges (READ_SIZE = 64 KiB) and well past it
SIZES = st.one_of(st.integers(0, 300), st.sampled_from([65_535, 65_536, 65_537, 70_000, 200_000]))
TEXT = st.text(max_size=40)  # any unicode, surrogates excluded: the frontend writes UTF-8


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    return random.Random(draw(st.integers(0, 2**32))).randbytes(draw(SIZES))


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, list[tuple[bytes, bytes]], list[tuple[bytes, bytes, bytes]]]:
    headers = draw(st.lists(st.tuples(TEXT, TEXT), max_size=6))
    names = st.one_of(TEXT.map(str.encode), st.binary(max_size=8))  # bytes that are not UTF-8 raise
    params = draw(st.lists(st.tuples(names, TEXT.map(str.encode), payloads()), min_size=1, max_size=3))
    rid = draw(TEXT).encode()
    return rid, [(n.encode(), v.encode()) for n, v in headers], params


MESSAGES = st.one_of(
    st.builds(load_frame, gpu=st.integers(-1, 3)),
    st.lists(requests(), min_size=1, max_size=5).map(inference_frame),
    st.just(b"X"),  # a command TorchServe does not know: its ValueError
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    messages=st.lists(MESSAGES, min_size=1, max_size=4),
    reads=st.lists(st.one_of(st.integers(1, 8), st.integers(1, 100_000)), min_size=1, max_size=20),
    cut=st.one_of(st.none(), st.floats(0.0, 1.0, exclude_max=True)),
)
def test_both_readers_decode_any_framed_stream_alike(messages, reads, cut):
    data = b"".join(messages)
    if cut is not None:  # the socket closes mid-stream, most likely mid-frame
        data = data[: int(len(data) * cut)]
    want = decode_all(Chunked(data, iter(lambda: len(data) or 1, None)), buffered=False)
    got = decode_all(Chunked(data, itertools.cycle(reads)), buffered=True)
    assert got == want
    theirs = decode_all(Chunked(data, itertools.cycle(reads)), buffered=False)
    assert theirs == want  # TorchServe's reader itself does not depend on how reads split


def test_the_buffered_reader_over_a_real_socket_with_a_writer_in_pieces():
    data = stream()
    results = {}
    for buffered in (False, True):
        ours, theirs = socket.socketpair()
        rng = random.Random(11)

        def write(sock: socket.socket = theirs, rng: random.Random = rng) -> None:
            pos = 0
            while pos < len(data):
                step = rng.choice([1, 13, 512, 4096, 70_000])
                sock.sendall(data[pos : pos + step])
                pos += step
            sock.close()

        writer = threading.Thread(target=write)
        writer.start()
        try:
            results[buffered] = decode_all(ours, buffered)
        finally:
            writer.join(30)
            ours.close()
    assert results[True] == results[False] and results[False][1] is True


def test_the_reference_is_torchserves_own_reader():
    assert ORIGINAL.__module__ == "ts.protocol.otf_message_handler" and ORIGINAL.__name__ == "_retrieve_buffer"


def test_installed_only_for_the_pinned_torchserve_and_when_the_setting_is_on(monkeypatch):
    monkeypatch.setattr(otf, "_retrieve_buffer", ORIGINAL)
    assert worker_protocol.install(False).startswith("off") and otf._retrieve_buffer is ORIGINAL
    assert "0.12.0 only" in worker_protocol.install(True, version="0.13.0") and otf._retrieve_buffer is ORIGINAL
    assert worker_protocol.install(True) == "on"
    installed = otf._retrieve_buffer
    assert isinstance(installed.__self__, BufferedReader)
    assert worker_protocol.install(True) == "on" and otf._retrieve_buffer is installed  # once per worker
