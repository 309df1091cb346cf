"""``python -m client score`` while its workers are killed, on this module's own TorchServe:
every row is written once, in input order, with the right probabilities (the chunks in
flight got "Worker died." or 503 until the workers were back, and were resent)."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import torch

from client import ClientConfig
from client.score import ScoreError, Scorer, score_file
from servectl.waiting import wait_for
from tests.conftest import PROBABILITY_ATOL, free_ports
from tests.integration.test_client import read_scored, score_input
from tests.reliability.conftest import own_server, workers

ROWS = 300_000  # enough chunks that the kill lands mid-run on any machine
CHUNK = 2_000


def test_workers_killed_during_scoring_lose_and_duplicate_no_row(built_card, built_model, test_split, tmp_path):
    src, rows = score_input(test_split, built_card, tmp_path, n_rows=ROWS)
    (tmp_path / "server").mkdir()
    with own_server(built_card.model_name, tmp_path / "server") as settings:
        victims = [pid for pid, _ in workers(settings)]  # all of them: requests in flight must fail
        written: list[int] = []
        killed = threading.Event()

        def progress(n: int) -> None:  # called after each chunk is written, in order
            written.append(n)
            if len(written) == 3 and not killed.is_set():
                for pid in victims:
                    os.kill(pid, signal.SIGKILL)
                killed.set()

        config = ClientConfig(settings.inference.url, model=settings.model_name, backoff=0.2)
        scorer = Scorer(config, connections=4, chunk_rows=CHUNK, retries=10)
        with open(tmp_path / "scored.csv", "wb") as out:
            report = scorer.run(src, out, progress=progress)
        assert killed.is_set()
        wait_for(lambda: not set(victims) & {pid for pid, _ in workers(settings)}, timeout=60,
                 what="the killed workers to be gone from the model's workers")
    print(f"scored {report.rows} rows, {report.retries} chunks resent after the kill")  # timing: not asserted
    assert report.rows == ROWS and sum(written) == ROWS
    columns, labels, probabilities = read_scored(tmp_path / "scored.csv")
    with torch.inference_mode():
        want = torch.softmax(built_model(rows), 1).numpy()
    assert len(labels) == ROWS
    np.testing.assert_allclose(probabilities, want, atol=PROBABILITY_ATOL)
    assert labels == [built_card.class_names[i] for i in want.argmax(1)]


def test_score_file_writes_nothing_partial_when_it_stops(built_card, test_split, tmp_path):
    """No server at all: the run stops after its retries and leaves no output file."""
    src, _ = score_input(test_split, built_card, tmp_path, n_rows=100)
    (port,) = free_ports(1)
    config = ClientConfig(f"http://127.0.0.1:{port}", model=built_card.model_name, retries=0, backoff=0.01,
                          connect_timeout=0.5)
    try:
        score_file(config, src, tmp_path / "scored.csv", show_progress=False, retries=1)
    except ScoreError as exc:
        assert "gave up after 1 retries" in str(exc)
    else:
        raise AssertionError("scoring with no server succeeded")
    assert not list(tmp_path.glob("scored.csv*"))
