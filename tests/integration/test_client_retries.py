"""The client's one retry layer and one budget, counted by a real HTTP server on loopback:
every request the server saw is in ``Counting.hits``. No TorchServe: what is counted is what
the client sends, and TorchServe's answers are replayed with their status and message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from client import Client, ClientConfig, PredictionError
from client.score import ScoreError, Scorer
from tests.conftest import REPO
from tests.support.http_stub import StubHandler, stub_server

# what TorchServe answers, by the last path segment (the "version" the client pins)
ANSWERS = {
    "busy": (503, "ServiceUnavailableException", 'Model "m" has no worker to serve inference request.'),
    "dying": (500, "InternalServerException", "Worker died."),
    "broken": (500, "internal", "boom"),
    "bad": (400, "invalid_value", "line 1, column f1: 'x' is not a number"),
}
SLOW_S = 1.0  # the "slow" path answers after this long


class Counting(StubHandler):
    hits: list[str] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        with Counting.lock:
            Counting.hits.append(self.path.rsplit("/", 1)[-1])
        self.read_body()
        name = self.path.rsplit("/", 1)[-1]
        if name == "slow":
            time.sleep(SLOW_S)
            name = "busy"
        status, type_, message = ANSWERS[name]
        self.send_body(status, json.dumps({"code": status, "type": type_, "message": message}).encode())


@pytest.fixture
def counting() -> Iterator[str]:
    Counting.hits = []
    with stub_server(Counting) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


def config(url: str, version: str, **kwargs: float) -> ClientConfig:
    return ClientConfig(url, model="m", version=version, **{"backoff": 0.01, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["busy", "dying"])
def test_a_transient_answer_is_sent_retries_plus_one_times_in_all(counting, version):
    with pytest.raises(PredictionError) as info:
        Client(config(counting, version, retries=3)).predict([[1.0]])
    assert info.value.status == ANSWERS[version][0] and info.value.transient
    assert Counting.hits == [version] * 4


@pytest.mark.parametrize("version", ["busy", "dying"])
def test_scoring_a_chunk_sends_it_retries_plus_one_times_not_their_square(counting, version, tmp_path):
    """The chunk's --retries and the session's retries were two layers: (3+1) x (3+1) = 16."""
    src = tmp_path / "rows.csv"
    src.write_text("1,2\n")
    scorer = Scorer(config(counting, version, retries=3), connections=1, retries=3)
    with pytest.raises(ScoreError, match="gave up after 3 retries"), open(tmp_path / "out.csv", "wb") as out:
        scorer.run(src, out)
    assert Counting.hits == [version] * 4 and scorer.retried == 3


@pytest.mark.parametrize("version", ["broken", "bad"])
def test_other_answers_are_sent_once(counting, version, tmp_path):
    with pytest.raises(PredictionError) as info:
        Client(config(counting, version, retries=3)).predict([[1.0]])
    assert not info.value.transient and Counting.hits == [version]
    src = tmp_path / "rows.csv"
    src.write_text("1,2\n")
    with pytest.raises(ScoreError), open(tmp_path / "out.csv", "wb") as out:
        Scorer(config(counting, version), connections=1, retries=3).run(src, out)
    assert Counting.hits == [version] * 2


def test_a_read_timeout_is_not_resent(counting, tmp_path):
    """The server got the request and may still be computing it: only a connection that never
    opened is resent (with 503 and "Worker died.")."""
    src = tmp_path / "rows.csv"
    src.write_text("1,2\n")
    scorer = Scorer(config(counting, "slow", read_timeout=0.2), connections=1, retries=3)
    with pytest.raises(ScoreError) as info, open(tmp_path / "out.csv", "wb") as out:
        scorer.run(src, out)
    assert Counting.hits == ["slow"], info.value
    assert "no answer for data rows 0-0 (not resent)" in str(info.value) and "timed out" in str(info.value)


def test_the_total_time_budget_ends_the_resends(counting):
    """retries=50 at 0.1 s backoff would take minutes; retry_seconds=0.6 ends them: no attempt
    starts after the budget, so the call ends within it plus one answer's time."""
    client = Client(config(counting, "busy", retries=50, backoff=0.1, retry_seconds=0.6))
    started = time.monotonic()
    with pytest.raises(PredictionError):
        client.predict([[1.0]])
    took = time.monotonic() - started
    print(f"budget 0.6 s: {len(Counting.hits)} requests in {took:.2f} s")
    assert 2 <= len(Counting.hits) < 51 and took < 0.6 + 0.5


def test_a_refused_connection_is_resent_and_says_unreachable():
    from tests.conftest import free_ports

    (port,) = free_ports(1)
    client = Client(ClientConfig(f"http://127.0.0.1:{port}", retries=2, backoff=0.01, connect_timeout=0.5))
    started = time.monotonic()
    with pytest.raises(PredictionError) as info:
        client.predict([[0.0] * 10])
    assert info.value.status == 0 and info.value.type == "unreachable" and info.value.transient
    assert time.monotonic() - started < 5


def score_cli(url: str, *args: str) -> subprocess.Popen[str]:
    # a CI shell started in the background leaves SIGINT ignored, which the child would inherit
    return subprocess.Popen(
        [sys.executable, "-m", "client", "score", *args, "--url", url, "--model", "m", "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_ctrl_c_during_score_stops_promptly(counting, tmp_path):
    """Against a server that only answers 503, with 100 resends allowed: Ctrl-C ends the run at
    once (no backoff is waited out, no further request is sent), exit 130, no output left."""
    src = tmp_path / "rows.csv"
    src.write_text("".join(f"{i},1\n" for i in range(40)))
    out = tmp_path / "scored.csv"
    proc = score_cli(f"{counting}", str(src), "--out", str(out), "--retries", "100", "--chunk-rows", "10",
                     "--connections", "2", "--version", "busy")
    try:
        deadline = time.monotonic() + 30
        while len(Counting.hits) < 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(Counting.hits) >= 4, proc.communicate(timeout=5)
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
        took = time.monotonic() - sent
    finally:
        proc.kill()
        proc.wait()
    print(f"Ctrl-C: exited {took:.2f} s after SIGINT, {len(Counting.hits)} requests")
    # before the fix it had not stopped 20 s after the signal; the bound leaves room for a loaded machine
    assert took < 10.0, f"took {took:.1f} s to stop"
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    seen = len(Counting.hits)
    time.sleep(0.3)
    assert len(Counting.hits) == seen  # nothing left running in the background
    assert not list(tmp_path.glob("scored.csv*"))


@pytest.mark.parametrize("text", ["", "\n\n", "f1,f2\n", "f1,f2\n\n\n"], ids=["empty", "blank", "header", "header+blank"])
def test_score_on_a_file_without_data_rows_says_so_and_exits_2(counting, tmp_path, text):
    """Nothing to score: no request, no output file that would look like a result, exit 2
    (the input's fault, as for an unreadable file)."""
    src = tmp_path / "rows.csv"
    src.write_text(text)
    out = tmp_path / "scored.csv"
    proc = score_cli(counting, str(src), "--out", str(out))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    assert f"client: error: {src} has no data rows: nothing to score, {out} not written" in stderr
    assert Counting.hits == [] and not list(tmp_path.glob("scored.csv*"))


def test_the_command_line_takes_the_time_budget(counting, tmp_path):
    """score --retries 100 --retry-seconds 0.5 against a 503-only server: the time budget ends it."""
    src = tmp_path / "rows.csv"
    src.write_text("1,2\n")
    started = time.monotonic()
    proc = score_cli(counting, str(src), "--out", str(tmp_path / "scored.csv"), "--retries", "100",
                     "--retry-seconds", "0.5", "--version", "busy", "--connections", "1")
    _, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == 1 and "gave up after 100 retries or 0.5 s" in stderr, stderr
    assert 2 <= len(Counting.hits) < 101 and took < 10, (len(Counting.hits), took)
