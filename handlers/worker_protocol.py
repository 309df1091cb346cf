"""A buffered reader for TorchServe 0.12.0's worker protocol, installed by the handler.

TorchServe's worker reads every field of a request from the frontend's socket with its own
``recv()`` (``ts.protocol.otf_message_handler._retrieve_buffer``): a single-row request with
ordinary headers takes ~45 system calls, a third of a worker's CPU samples
(benchmarks/README.md). This reader returns the same bytes from one buffer filled by
``recv()`` calls of at least 64 KiB. It replaces ``_retrieve_buffer`` only, so every frame is
still parsed by TorchServe's own functions; it is exact because the worker's socket has no
other reader (the synchronous worker loop reads a message, answers it, reads the next).

Installed only for the pinned TorchServe (the frame format is 0.12.0's; upstream makes no
further releases) and when ``handler.buffered_reader`` in serve_config/model-config.yaml is
true. A closed socket ends the worker as TorchServe's reader does: "Frontend disconnected."
at INFO, then ``sys.exit(0)``. tests/unit/test_worker_protocol.py checks it byte for byte
against TorchServe's reader.
"""

from __future__ import annotations

import logging
import socket
import sys

import ts.protocol.otf_message_handler as otf
from ts.version import __version__ as ts_version

PINNED_TORCHSERVE = "0.12.0"
READ_SIZE = 1 << 16
# TorchServe's reader, kept before any install (tests compare against it)
TORCHSERVE_READER = otf._retrieve_buffer


class BufferedReader:
    """``_retrieve_buffer(conn, length)`` with read-ahead: fields come from a buffer, and the
    socket is read only when the buffer holds fewer bytes than the next field."""

    def __init__(self) -> None:
        self.conn: socket.socket | None = None
        self.buf = bytearray()
        self.pos = 0

    def read(self, conn: socket.socket, length: int) -> bytearray:
        if conn is not self.conn:  # a new connection starts with an empty buffer
            self.conn, self.buf, self.pos = conn, bytearray(), 0
        if length <= 0:
            return bytearray()  # as TorchServe's loop: no read at all
        available = len(self.buf) - self.pos
        if available < length:
            if available == 0 and length >= READ_SIZE:
                self.buf, self.pos = bytearray(), 0
                return _read_exactly(conn, length)  # a large body: no extra copy through the buffer
            del self.buf[: self.pos]
            self.pos = 0
            while available < length:
                pkt = conn.recv(max(READ_SIZE, length - available))
                if not pkt:
                    _disconnected()
                self.buf += pkt
                available += len(pkt)
        out = self.buf[self.pos : self.pos + length]
        self.pos += length
        return out


def _read_exactly(conn: socket.socket, length: int) -> bytearray:
    """TorchServe's own loop: exactly ``length`` bytes, nothing read ahead."""
    data = bytearray()
    while length > 0:
        pkt = conn.recv(length)
        if not pkt:
            _disconnected()
        data += pkt
        length -= len(pkt)
    return data


def _disconnected() -> None:
    logging.info("Frontend disconnected.")
    sys.exit(0)


def install(enabled: bool, version: str = ts_version) -> str:
    """Put the reader in place of TorchServe's; returns what was done, for the load log line."""
    if not enabled:
        return "off (handler.buffered_reader is false)"
    if version != PINNED_TORCHSERVE:
        return f"off (TorchServe {version}, the reader is exact for {PINNED_TORCHSERVE} only)"
    if not isinstance(getattr(otf._retrieve_buffer, "__self__", None), BufferedReader):
        otf._retrieve_buffer = BufferedReader().read
    return "on"
