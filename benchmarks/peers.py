"""The peers of ``make bench`` and the service, as systems one round measures alike: where to
send each figure's requests, and how to read a single-row answer's probabilities (checked
against the model in-process before anything is timed: same model, same answer content).

Each peer runs in a process group of its own on a free loopback port, with the service's
worker count and batch settings (serve_config/model-config.yaml); a peer that cannot start
raises ``Unavailable`` with one line saying why, and the benchmark goes on without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import requests

from servectl.config.settings import REPO, free_loopback_ports

JSON_CT = "application/json"
NPY_CT = "application/x-npy"
COLUMNAR_CT = "application/vnd.tabular.columnar+json"
TRITON_VENV = REPO / "build" / "triton-venv"


class Unavailable(Exception):
    """A peer that cannot run here; the message is the one line the benchmark prints."""


@dataclasses.dataclass(frozen=True)
class Load:
    """One figure's request: where, what body, which headers."""

    url: str
    body: Path
    content_type: str
    accept: str = ""
    header: str = ""  # one more "Name: value" header (Triton's Inference-Header-Content-Length)


@dataclasses.dataclass(frozen=True)
class System:
    name: str
    single: Load
    bulk_json: Load
    bulk_binary: Load | None
    probabilities: Callable[[bytes], np.ndarray]  # of a single-row JSON answer
    tuning: str = ""
    why_no_binary: str = ""
    root_pid: int | None = None  # its processes' root, whose tree's CPU the rounds measure


def columnar_probabilities(answer: bytes) -> np.ndarray:
    return np.asarray(json.loads(answer)["probabilities"], dtype=np.float64)


def triton_probabilities(answer: bytes) -> np.ndarray:
    out = {o["name"]: o for o in json.loads(answer)["outputs"]}["probabilities"]
    return np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])


def triton_bodies(rows: list[list[float]], folder: Path) -> tuple[Path, Path, Path, str]:
    """Triton's single-row and 1,000-row JSON bodies (KServe v2 tensors), and the 1,000-row body
    of the binary tensor extension (JSON header, then the raw float32 rows; the probabilities
    answered as raw bytes), with its Inference-Header-Content-Length header."""
    n_features = len(rows[0])

    def v2(part: list[list[float]]) -> bytes:
        tensor = {"name": "x", "shape": [len(part), n_features], "datatype": "FP32",
                  "data": [v for row in part for v in row]}
        return json.dumps({"inputs": [tensor]}).encode()

    single, bulk = folder / "triton-single.json", folder / "triton-bulk.json"
    single.write_bytes(v2(rows[:1]))
    bulk.write_bytes(v2(rows))
    raw = np.asarray(rows, dtype=np.float32).tobytes()
    header = json.dumps({
        "inputs": [{"name": "x", "shape": [len(rows), n_features], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }).encode()
    binary = folder / "triton-bulk.bin"
    binary.write_bytes(header + raw)
    return single, bulk, binary, f"Inference-Header-Content-Length: {len(header)}"


def peer_env(workers: int, batch_size: int, batch_delay_ms: float) -> dict[str, str]:
    return os.environ | {"PEER_WORKERS": str(workers), "PEER_BATCH_SIZE": str(batch_size),
                         "PEER_BATCH_DELAY_MS": str(batch_delay_ms), "OMP_NUM_THREADS": "1",
                         "PYTHONPATH": str(REPO)}


@contextlib.contextmanager
def process_group(cmd: list[str], env: dict[str, str], log: Path, ready: Callable[[], bool], what: str,
                  timeout: float = 120.0) -> Iterator[subprocess.Popen[bytes]]:
    """``cmd`` in a new session (so its workers stop with it), polled until ``ready``; SIGTERM to
    the group afterwards, SIGKILL if it lingers. Raises Unavailable with the log's last line."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise Unavailable(f"{what} exited ({proc.returncode}) at start-up: {last_line(log)}")
            with contextlib.suppress(requests.RequestException):
                if ready():
                    break
            if time.monotonic() > deadline:
                raise Unavailable(f"{what} did not answer within {timeout:g} s: {last_line(log)}")
            time.sleep(0.2)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "(no output)"


def posts_ok(load: Load) -> Callable[[], bool]:
    def ready() -> bool:
        return requests.post(load.url, data=load.body.read_bytes(), headers={"Content-Type": load.content_type},
                             timeout=5).status_code == 200
    return ready


def predict_system(name: str, port: int, payloads: Any, binary: bool, tuning: str, why_no_binary: str = "",
                   ) -> System:
    """A peer answering the service's own bodies on POST /predict (FastAPI, LitServe)."""
    url = f"http://127.0.0.1:{port}/predict"
    return System(name, Load(url, payloads.single, JSON_CT), Load(url, payloads.bulk_json, JSON_CT),
                  Load(url, payloads.bulk_npy, NPY_CT, NPY_CT) if binary else None, columnar_probabilities,
                  tuning, why_no_binary)


def predict_peer(kind: str, payloads: Any, port: int, workers: int, batch_size: int, delay_ms: float,
                 ) -> tuple[System, list[str]]:
    """The FastAPI or LitServe peer's system and command line."""
    if kind == "fastapi":
        tuning = (f"uvicorn, {workers} worker processes (uvloop, httptools), one async endpoint, orjson, one torch "
                  "thread each; no batching (FastAPI has none)")
        return predict_system("FastAPI (lean)", port, payloads, True, tuning), [
            sys.executable, "-m", "uvicorn", "benchmarks.fastapi_peer:app", "--host", "127.0.0.1", "--port",
            str(port), "--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning"]
    tuning = (f"workers_per_device={workers} (CPU), max_batch_size={batch_size}, batch_timeout={delay_ms:g} ms, "
              "fast_queue (ZeroMQ), 1 API server, orjson answers, one torch thread per worker")
    why = "LitServe reads every body with request.json() (litserve/server.py, _prepare_request): no .npy path"
    return (predict_system("LitServe", port, payloads, False, tuning, why),
            [sys.executable, "-m", "benchmarks.litserve_peer", "--port", str(port)])


def spawned(kind: str, payloads: Any, folder: Path, workers: int, batch_size: int, delay_ms: float,
            ) -> Iterator[System]:
    """The ``kind`` of peer, on a free port, for as long as the caller's block runs."""
    (port,) = free_loopback_ports(1)
    system, cmd = predict_peer(kind, payloads, port, workers, batch_size, delay_ms)
    log = folder / f"{system.name.split()[0].lower()}.log"
    with process_group(cmd, peer_env(workers, batch_size, delay_ms), log, posts_ok(system.single),
                       f"the {system.name} peer") as proc:
        yield dataclasses.replace(system, root_pid=proc.pid)


@contextlib.contextmanager
def fastapi(payloads: Any, folder: Path, workers: int, batch_size: int, delay_ms: float) -> Iterator[System]:
    yield from spawned("fastapi", payloads, folder, workers, batch_size, delay_ms)


@contextlib.contextmanager
def litserve(payloads: Any, folder: Path, workers: int, batch_size: int, delay_ms: float) -> Iterator[System]:
    yield from spawned("litserve", payloads, folder, workers, batch_size, delay_ms)


@contextlib.contextmanager
def triton(payloads: Any, folder: Path, workers: int, batch_size: int, delay_ms: float) -> Iterator[System]:
    python = TRITON_VENV / "bin" / "python"
    if not (TRITON_VENV / ".installed").is_file():
        raise Unavailable(f"{TRITON_VENV.relative_to(REPO)} is not installed (make bench installs "
                          "requirements-triton.lock there; its install failed or did not run)")
    http, grpc, metrics = free_loopback_ports(3)
    rows = json.loads(payloads.bulk_json.read_text())["instances"]
    single, bulk, binary, header = triton_bodies(rows, folder)
    url = f"http://127.0.0.1:{http}/v2/models/tabular/infer"
    system = System(
        "Triton (pytriton)",
        Load(url, single, JSON_CT),
        Load(url, bulk, JSON_CT),
        Load(url, binary, "application/octet-stream", header=header),
        triton_probabilities,
        f"tritonserver 2.51 (nvidia-pytriton 0.7.0) on CPU, {workers} model instances of a Python function "
        f"(@batch), dynamic batcher: max_queue_delay {delay_ms:g} ms, max_batch_size 1,024 rows (Triton counts "
        "rows: a 1,000-row request must fit)",
    )
    # the Python backend's stub links libpython3.11 by name: the interpreter's own, not the system's
    libdir = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                            capture_output=True, text=True, check=False).stdout.strip()
    env = peer_env(workers, batch_size, delay_ms)
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    cmd = [str(python), "-m", "benchmarks.triton_peer", "--http-port", str(http), "--grpc-port", str(grpc),
           "--metrics-port", str(metrics)]
    with process_group(cmd, env, folder / "triton.log", posts_ok(system.single), "the Triton peer") as proc:
        yield dataclasses.replace(system, root_pid=proc.pid)


PEERS = {"fastapi": fastapi, "litserve": litserve, "triton": triton}
