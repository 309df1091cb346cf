"""Bulk file scoring: ``python -m client score rows.csv --out scored.csv``.

The file is read in chunks of lines (client.chunks); each chunk goes to the server as a CSV body (the
file's header, if it has one, in front) and comes back as an .npy array, on a pool of
threads, each with its own connection. Answers are written in input order as they
complete, and at most ``in_flight`` chunks are read ahead, so memory is bounded by
``in_flight x chunk_rows`` rows whatever the file's size. A chunk that meets a transient
failure (a connection that never opened, 503, TorchServe's "Worker died.") is resent, up to
``retries`` times within the client's ``retry_seconds``; a 4xx stops the run with the server's
message, its line turned into the file's. A file without data rows is refused (:class:`NoRows`)
before any request: an output holding only a header would look like a result. Ctrl-C (any
exception in the writing thread) sets the scorer's cancel event: no chunk waits out a backoff or
is resent after it, so the run ends within the requests already in flight.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from client.api import NPY, Client, ClientConfig, PredictionError, Scores
from client.chunks import Chunk, read_chunks

CSV = "text/csv"
_LINE = re.compile(r"^line (\d+)(.*)$", re.DOTALL)


@dataclass(frozen=True)
class ScoreReport:
    rows: int
    chunks: int
    seconds: float
    retries: int
    model_version: str

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


class ScoreError(Exception):
    """A chunk the server refused (4xx), or one that still failed after its retries."""


class NoRows(ValueError):
    """The file holds no data row (empty, blank lines, or a header only): nothing was sent."""


def _body(header: bytes | None, chunk: Chunk) -> bytes:
    return chunk.body if header is None else header + chunk.body


def _where(error: PredictionError, chunk: Chunk, header: bytes | None, path: str) -> str:
    """The server's message with its body line turned into the file's line and data row."""
    match = _LINE.match(error.message)
    if match is not None:
        index = int(match.group(1)) - (2 if header is not None else 1)
        if 0 <= index < chunk.rows:
            return (f"{path} line {chunk.file_lines[index]} (data row {chunk.first_row + index})"
                    f"{match.group(2)}")
    last = chunk.first_row + chunk.rows - 1
    lines = f"lines {chunk.file_lines[0]}-{chunk.file_lines[-1]}"
    return f"{path} data rows {chunk.first_row}-{last} ({lines}): {error.message}"


def format_rows(scores: Scores) -> bytes:
    """``label,p1,...`` per row; each probability as the shortest text that reads back as the
    float32 the model computed (orjson writes the array ~4x faster than f-strings, measured),
    the labels and rows interleaved by list slices rather than a loop (0.33 -> 0.26 s per 1M rows)."""
    array = np.ascontiguousarray(scores.probabilities, dtype=np.float32)
    text = orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY)[2:-2].replace(b"],[", b"\n") + b"\n"
    rows = text.splitlines(keepends=True)
    names = np.array([n.encode() + b"," for n in scores.class_names], dtype=object)
    out: list[bytes] = [b""] * (2 * len(rows))
    out[::2] = names[array.argmax(axis=1)].tolist()
    out[1::2] = rows
    return b"".join(out)


class Scorer:
    """Scores one file; a thread pool of ``connections`` clients, ``in_flight`` chunks ahead."""

    def __init__(self, config: ClientConfig, connections: int = 4, in_flight: int | None = None,
                 chunk_rows: int = 5000, retries: int = 5) -> None:
        self.config = config
        self.connections = connections
        self.in_flight = in_flight or 2 * connections
        self.chunk_rows = chunk_rows
        self.retries = retries
        self.retried = 0
        self.cancel = threading.Event()  # set when the run stops: no chunk resends after it
        self._local = threading.local()
        self._lock = threading.Lock()

    def _client(self) -> Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = Client(self.config, cancel=self.cancel)
        return client

    def score_chunk(self, header: bytes | None, chunk: Chunk, path: str) -> Scores:
        body = _body(header, chunk)
        try:
            resp = self._client().post_for(CSV, body, accept=NPY, retries=self.retries, on_resend=self._count_retry)
        except PredictionError as exc:
            rows = f"data rows {chunk.first_row}-{chunk.first_row + chunk.rows - 1}"
            if exc.transient:
                raise ScoreError(f"{path}: gave up after {self.retries} retries or {self.config.retry_seconds:g} s "
                                 f"on {rows}: {exc}") from exc
            if exc.status == 0:  # sent, then timed out or dropped: not resent, the server may have run it
                raise ScoreError(f"{path}: no answer for {rows} (not resent): {exc}") from exc
            where = _where(exc, chunk, header, path)
            raise ScoreError(f"the server refused {where} ({exc.status} {exc.type})") from exc
        scores = Client.scores(resp)
        if len(scores.probabilities) != chunk.rows:  # the server skips no line this client sends
            raise ScoreError(f"{path}: {chunk.rows} rows sent from line {chunk.file_lines[0]}, "
                             f"{len(scores.probabilities)} answered")
        return scores

    def _count_retry(self) -> None:
        with self._lock:
            self.retried += 1

    def run(self, src: Path, out: IO[bytes], progress: Callable[[int], None] | None = None) -> ScoreReport:
        started = time.perf_counter()
        rows = chunks = 0
        version = ""
        with open(src, "rb") as f, ThreadPoolExecutor(self.connections, thread_name_prefix="score") as pool:
            header, stream = read_chunks(f, self.chunk_rows)
            pending: deque[Future[Scores]] = deque()
            wrote_header = False
            try:
                for chunk in stream:
                    if len(pending) >= self.in_flight:
                        rows, chunks, version, wrote_header = self._write(pending.popleft(), out, rows, chunks,
                                                                          wrote_header, progress)
                    pending.append(pool.submit(self.score_chunk, header, chunk, str(src)))
                while pending:
                    rows, chunks, version, wrote_header = self._write(pending.popleft(), out, rows, chunks,
                                                                      wrote_header, progress)
            except BaseException:
                self.cancel.set()
                for future in pending:
                    future.cancel()
                raise
        if not chunks:
            raise NoRows(f"{src} has no data rows")
        return ScoreReport(rows, chunks, time.perf_counter() - started, self.retried, version)

    @staticmethod
    def _write(future: Future[Scores], out: IO[bytes], rows: int, chunks: int, wrote_header: bool,
               progress: Callable[[int], None] | None) -> tuple[int, int, str, bool]:
        scores = future.result()
        if not wrote_header:
            out.write(b",".join([b"label", *(n.encode() for n in scores.class_names)]) + b"\n")
        out.write(format_rows(scores))
        n = len(scores.probabilities)
        if progress is not None:
            progress(n)
        return rows + n, chunks + 1, scores.model_version, True


def score_file(config: ClientConfig, src: Path, dst: Path, show_progress: bool = True, **options: Any) -> ScoreReport:
    """Score ``src`` into ``dst`` (written to a temporary name, renamed when complete, so a
    failed run never leaves a partial file that looks whole)."""
    from tqdm import tqdm

    scorer = Scorer(config, **options)
    partial = dst.with_name(dst.name + ".partial")
    with open(partial, "wb") as out, tqdm(unit=" rows", unit_scale=True, disable=not show_progress,
                                          desc=src.name, smoothing=0.1) as bar:
        try:
            report = scorer.run(src, out, progress=bar.update)
        except BaseException:
            out.close()
            partial.unlink(missing_ok=True)
            raise
    partial.replace(dst)
    return report
