"""handlers/worker_protocol.py against TorchServe 0.12.0's own reader: the same byte stream
(the frames the Java frontend writes: load and inference messages, many headers, large
bodies, multipart fields, several messages back to back) is decoded by TorchServe's
``retrieve_msg`` with its reader and with the buffered one, over a real socket pair and over
reads cut at every size, and the results must be identical; a closed socket must end both
the same way."""

from __future__ import annotations

import logging
import random
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import ts.protocol.otf_message_handler as otf

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


def decode_all(conn: object, buffered: bool) -> tuple[list[object], bool]:
    """Every message until the connection closes; whether the reader then exited with code 0."""
    messages: list[object] = []
    with reader(buffered):
        try:
            while True:
                messages.append(otf.retrieve_msg(conn))
        except SystemExit as exc:
            return messages, exc.code == 0


@pytest.fixture(autouse=True)
def decoded_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TS_DECODE_INPUT_REQUEST", "false")  # as the served config: raw bytes


def test_the_buffered_reader_decodes_what_torchserves_decodes_at_every_cut():
    data = stream()
    want, exited = decode_all(Chunked(data, iter(lambda: len(data), None)), buffered=False)
    assert exited and len(want) == 7 and [cmd for cmd, _ in want] == [b"L", b"L"] + [b"I"] * 5
    for seed in range(20):
        rng = random.Random(seed)
        sizes = iter(lambda rng=rng: rng.choice([1, 2, 3, 4, 7, 64, 1000, 65536, 1 << 20]), None)
        assert decode_all(Chunked(data, sizes), buffered=True) == (want, True), f"cut sequence {seed}"


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
    assert results[True] == results[False] and results[False][1]


@pytest.mark.parametrize("cut", [0, 1, 5, 40, 200_000])
def test_a_socket_closed_mid_message_ends_the_worker_as_torchserve_does(cut, caplog):
    data = stream()
    data = data[: len(data) - cut] if cut else data
    outcomes = []
    for buffered in (False, True):
        with caplog.at_level(logging.INFO):
            caplog.clear()
            messages, exited = decode_all(Chunked(data, iter(lambda: 3000, None)), buffered)
        assert exited and "Frontend disconnected." in caplog.text
        outcomes.append(messages)
    assert outcomes[0] == outcomes[1]


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
