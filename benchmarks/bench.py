"""Benchmark the served model against references measured in the same run.

    python -m benchmarks.bench                 # the full run: tables, JSON, plot
    python -m benchmarks.bench --sweep         # workers x batchSize x maxBatchDelay

Starts TorchServe with the project's real configuration (serve_config/, the real .mar)
on free loopback ports in a temporary run folder, always stops it, and drives it with
wrk. Every result is printed next to a reference from the same run on the same machine
(TorchServe's own /ping; the scripted model called in-process), because absolute
numbers on a shared 2-core machine mean little and ratios travel.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
import requests
import torch

from benchmarks import peers
from benchmarks.compare import SERVICE, compare_markdown, peer_targets, summarise
from benchmarks.report import (
    LoadResult,
    Target,
    best_setting,
    markdown,
    parse_wrk,
    sweep_markdown,
    targets,
    ts_counters,
    ts_split,
)
from common.metric_names import PREFIX
from common.model_card import METADATA_FILE, ModelCard
from common.prometheus import metric_sums
from handlers import runtimes
from handlers.contract import Responder, Schema, parse_request
from servectl import errors
from servectl.config import model_config
from servectl.config.settings import REPO, ServeSettings, free_loopback_ports
from servectl.instance import launch, processes, readiness
from servectl.waiting import WaitTimeout, wait_for

HERE = Path(__file__).resolve().parent
WRK_LUA = HERE / "wrk.lua"
ARTIFACTS = REPO / "artifacts"
JSON_CT = "application/json"
NPY_CT = "application/x-npy"
COLUMNAR_CT = "application/vnd.tabular.columnar+json"


# ---------------------------------------------------------------- payloads


@dataclass(frozen=True)
class Payloads:
    single: Path
    bulk_json: Path
    bulk_npy: Path
    bulk_rows: int


def make_payloads(card: ModelCard, folder: Path, bulk_rows: int = 1000, seed: int = 0) -> Payloads:
    """Rows drawn around the training statistics, written the way a client would send them
    (6 significant digits in JSON, float32 in .npy)."""
    rng = np.random.default_rng(seed)
    mean = np.array(card.normalisation["mean"])
    std = np.array(card.normalisation["std"])
    rows = (mean + std * rng.standard_normal((bulk_rows, card.n_features))).astype(np.float32)
    as_list = [[float(f"{v:.6g}") for v in row] for row in rows.tolist()]
    folder.mkdir(parents=True, exist_ok=True)
    single = folder / "single.json"
    single.write_text(json.dumps({"instances": as_list[:1]}))
    bulk_json = folder / "bulk.json"
    bulk_json.write_text(json.dumps({"instances": as_list}))
    bulk_npy = folder / "bulk.npy"
    buf = io.BytesIO()
    np.save(buf, rows)
    bulk_npy.write_bytes(buf.getvalue())
    return Payloads(single, bulk_json, bulk_npy, bulk_rows)


# ---------------------------------------------------------------- references


def _rate(call: Callable[[], object], seconds: float) -> float:
    """Calls per CPU second of ``call`` in this thread, after a few uncounted ones: CPU time,
    not wall time, so a share of the core lost to other work does not lower the ceiling."""
    for _ in range(20):
        call()
    calls, start = 0, time.thread_time()
    while (elapsed := time.thread_time() - start) < seconds:
        for _ in range(10):
            call()
        calls += 10
    return calls / elapsed


def model_ceiling(card: ModelCard, payloads: Payloads, seconds: float = 2.0) -> dict[str, float]:
    """Rows/s in-process with one thread, as a worker runs it: the model file alone
    (the model ceiling), and the handler's own work without TorchServe (parse, forward,
    answer encoding) to split the served cost into handler and transport."""
    torch.set_num_threads(1)
    model = runtimes.load(card.runtime, str(ARTIFACTS / card.model_file), 1, autograd=False)  # the card's variant
    out: dict[str, float] = {}

    def probabilities(x: torch.Tensor) -> torch.Tensor:
        return runtimes.probabilities(model(x))

    with torch.inference_mode():
        for n in (1, 1000):
            x = torch.randn(n, card.n_features)
            out[f"rows_per_s_{n}"] = n * _rate(partial(probabilities, x), seconds)
        schema = Schema(card.feature_names)
        responder = Responder(card.model_name, card.version, card.class_names)

        def handle(body: bytes, content_type: str) -> bytes:
            parsed = parse_request(body, content_type, schema)
            return responder.render(parsed, runtimes.probabilities(model(parsed.rows)))[0]

        for key, path, ctype, rows in (
            ("handler_rows_per_s_single_json", payloads.single, JSON_CT, 1),
            ("handler_rows_per_s_bulk_json", payloads.bulk_json, JSON_CT, payloads.bulk_rows),
            ("handler_rows_per_s_bulk_npy", payloads.bulk_npy, NPY_CT, payloads.bulk_rows),
        ):
            body = path.read_bytes()
            out[key] = rows * _rate(partial(handle, body, ctype), seconds)
    return out


# ---------------------------------------------------------------- server


@dataclass
class Running:
    settings: ServeSettings
    proc: subprocess.Popen[bytes]
    cold_start_s: float
    ready_s: float
    status: dict[str, Any]

    @property
    def predict_url(self) -> str:
        return f"{self.settings.inference.url}/predictions/{self.settings.model_name}"

    @property
    def ping_url(self) -> str:
        return f"{self.settings.inference.url}/ping"


@contextlib.contextmanager
def serving(
    card: ModelCard,
    probe: Path,
    model_store: Path | None = None,
    timeout: float = 120.0,
    properties: dict[str, str] | None = None,
) -> Iterator[Running]:
    """A TorchServe on free ports in a temp run folder; timed from launch to first answer.
    ``properties`` override config.properties values (the sweep and experiments only)."""
    run_dir = Path(tempfile.mkdtemp(prefix="bench-run-"))
    inference, management, metrics = free_loopback_ports(3)
    settings = ServeSettings.load(card.model_name, run_dir=run_dir).with_ports(inference, management, metrics)
    if properties:
        settings = settings.with_properties(**properties)
    if model_store is not None:
        settings = replace(settings, model_store=model_store)
    body = probe.read_bytes()
    log = open(run_dir / "torchserve.out", "wb")
    start = time.monotonic()
    proc = launch.start(settings, stdout=log)
    try:
        url = f"{settings.inference.url}/predictions/{settings.model_name}"

        def answered() -> bool:
            if proc.poll() is not None:
                raise errors.ServeError("TorchServe exited during start-up\n" + readiness.log_tail(settings))
            return requests.post(url, data=body, headers={"Content-Type": JSON_CT}, timeout=2).status_code == 200

        try:
            wait_for(answered, timeout, "a first successful prediction", interval=0.02,
                     retry_on=(requests.RequestException,))
        except WaitTimeout as exc:
            raise errors.ServeError(f"{exc}\n" + readiness.log_tail(settings)) from None
        cold = time.monotonic() - start
        status = readiness.wait_ready(settings, timeout, alive=lambda: proc.poll() is None, interval=0.05)
        ready = time.monotonic() - start
        yield Running(settings, proc, cold, ready, status)
    finally:
        processes.stop(settings)
        log.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def memory(proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """Resident memory of the Java frontend and of each Python worker."""
    out = []
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
            rss = child.memory_info().rss
        except psutil.Error:
            continue
        if "java" in Path(child.cmdline()[0]).name or "org.pytorch.serve" in cmd:
            role = "frontend (Java)"
        elif "model_service_worker" in cmd:
            role = "worker (Python)"
        elif "exporter" in cmd:
            role = "metrics exporter (Python)"
        else:
            continue
        out.append({"role": role, "pid": child.pid, "rss_mib": rss / 2**20})
    return sorted(out, key=lambda p: (p["role"], p["pid"]))


# the handler's own timing metric (handlers/telemetry.py: parse to encoded answers, per batch)
HANDLER_TIME = (f"{PREFIX}_handler_seconds_sum", f"{PREFIX}_handler_seconds_count")


class CpuMeter:
    """CPU seconds the frontend and the workers spend per request during one load run:
    unlike throughput, this barely moves when other work shares the machine."""

    def __init__(self, proc: subprocess.Popen[bytes], metrics_url: str | None = None,
                 exporter_url: str | None = None) -> None:
        self.metrics_url = metrics_url
        self.exporter_url = exporter_url  # the model-metrics exporter: the handler's own time per batch
        self.procs = {
            m["pid"]: ("frontend" if "frontend" in m["role"] else "workers")
            for m in memory(proc)
            if "exporter" not in m["role"]
        }

    def _cpu(self) -> dict[str, float]:
        out = {"frontend": 0.0, "workers": 0.0}
        for pid, role in self.procs.items():
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                out[role] += t.user + t.system
        return out

    def _ts(self) -> dict[str, float] | None:
        if self.metrics_url is None:
            return None
        try:
            counters = ts_counters(requests.get(self.metrics_url, timeout=5).text)
            if self.exporter_url is not None:
                counters |= metric_sums(requests.get(self.exporter_url, timeout=5).text, HANDLER_TIME)
            return counters
        except requests.RequestException:
            return None

    def measure(self, load: Callable[[], LoadResult]) -> dict[str, Any]:
        """The load's result plus CPU per request and TorchServe's own time split."""
        ts_before, before = self._ts(), self._cpu()
        result = load()
        after, ts_after = self._cpu(), self._ts()
        n = max(result.requests, 1)
        split = ts_split(ts_before, ts_after) if ts_before and ts_after else {}
        if split and ts_before and ts_after and HANDLER_TIME[1] in ts_after:
            batches = ts_after[HANDLER_TIME[1]] - ts_before[HANDLER_TIME[1]]
            requests_ = ts_after["ts_inference_requests_total"] - ts_before["ts_inference_requests_total"]
            if batches > 0 and requests_ > 0:
                handler_s = ts_after[HANDLER_TIME[0]] - ts_before[HANDLER_TIME[0]]
                split |= {"handler_ms_per_batch": round(handler_s / batches * 1000, 3),
                          "requests_per_batch": round(requests_ / batches, 2)}
        return (
            result.to_dict()
            | {f"cpu_us_per_req_{role}": round((after[role] - before[role]) / n * 1e6, 1) for role in before}
            | split
        )


def bulk_formats(payloads: Payloads) -> list[tuple[str, Path, str, str]]:
    """(name, body, Content-Type, Accept) of each bulk measurement: JSON rows (the default
    answer), the columnar JSON answer, .npy in with the row answer, .npy both ways."""
    return [
        ("json", payloads.bulk_json, JSON_CT, ""),
        ("columnar", payloads.bulk_json, JSON_CT, COLUMNAR_CT),
        ("npy", payloads.bulk_npy, NPY_CT, ""),
        ("binary", payloads.bulk_npy, NPY_CT, NPY_CT),
    ]


def answered_rows(resp: requests.Response) -> int:
    if resp.headers.get("Content-Type", "").startswith(NPY_CT):
        return len(np.load(io.BytesIO(resp.content), allow_pickle=False))
    doc = resp.json()
    return len(doc["labels"] if "labels" in doc else doc["predictions"])


def check_answers(run: Running, payloads: Payloads) -> None:
    """Before timing anything: every payload gets a 200 with one answer per row."""
    for _, path, ctype, accept in [("single", payloads.single, JSON_CT, ""), *bulk_formats(payloads)]:
        rows = 1 if path == payloads.single else payloads.bulk_rows
        resp = requests.post(
            run.predict_url, data=path.read_bytes(), headers={"Content-Type": ctype, "Accept": accept or "*/*"},
            timeout=10,
        )
        if resp.status_code != 200 or answered_rows(resp) != rows:
            raise SystemExit(f"bench: {path.name} answered {resp.status_code}: {resp.text[:300]}")


# ---------------------------------------------------------------- load


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("bench: wrk is not installed (make bench installs it: apt-get install -y wrk)")
    return wrk


def wrk(
    url: str,
    connections: int,
    seconds: float,
    name: str,
    body: Path | None = None,
    content_type: str = JSON_CT,
    rows: int = 1,
    accept: str = "",
    header: str = "",
) -> LoadResult:
    threads = min(2, connections)
    cmd = [
        ensure_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(WRK_LUA),
        url,
    ]
    if body is not None:
        cmd += ["--", str(body), content_type, accept, header]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench: wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout, name, connections, rows)


def warm_up(run: Running, payloads: Payloads, seconds: float, predict_url: str | None = None) -> None:
    """Not counted. The JVM's JIT compiler needs ~20 s of traffic on 2 busy cores before
    the frontend's cost per request settles (it falls by ~40%), so each path gets its share.
    ``predict_url``: another registration on the same server (the sweep's delay of 0)."""
    url = predict_url or run.predict_url
    wrk(url, 64, seconds / 2, "warm-up", payloads.single)
    for _, path, ctype, accept in bulk_formats(payloads):
        wrk(url, 8, seconds / 12, "warm-up", path, ctype, payloads.bulk_rows, accept)
    wrk(run.ping_url, 64, seconds / 6, "warm-up")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the full run


def machine(note: str) -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import ts  # noqa: PLC0415 - version only

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchserve": getattr(ts, "__version__", "0.12.0"),
        "wrk": subprocess.run([ensure_wrk(), "-v"], capture_output=True, text=True)
        .stdout.split("\n")[0]
        .strip(),
        "note": note,
    }


def full_run(args: argparse.Namespace, card: ModelCard, payloads: Payloads) -> dict[str, Any]:
    info = machine(args.note)
    say(f"bench: model ceiling in-process ({card.model_file}, 1 thread)")
    model = model_ceiling(card, payloads, 0.5 if args.quick else 2.0)
    served = model_config.load()
    say("bench: starting TorchServe with serve_config/ and the real .mar")
    with serving(card, payloads.single) as run:
        say(f"bench: first prediction after {run.cold_start_s:.1f}s, workers READY after {run.ready_s:.1f}s")
        check_answers(run, payloads)
        warm_up(run, payloads, args.warmup)
        single, ping, bulk = [], [], []
        meter = CpuMeter(run.proc, f"{run.settings.metrics.url}/metrics", f"{run.settings.model_metrics.url}/metrics")
        d = args.duration
        for c in args.connections:
            say(f"bench: {d:g}s at {c} connections: /ping, then single-row predictions")
            ping.append(meter.measure(partial(wrk, run.ping_url, c, d, "ping")))
            single.append(meter.measure(partial(wrk, run.predict_url, c, d, "single", payloads.single)))
        for fmt, path, ctype, accept in bulk_formats(payloads):
            say(f"bench: {d:g}s of {payloads.bulk_rows}-row {fmt} at {args.bulk_connections} connections")
            r = meter.measure(partial(wrk, run.predict_url, args.bulk_connections, d, f"bulk-{fmt}", path, ctype,
                                      payloads.bulk_rows, accept))
            bulk.append(r | {"format": fmt})
        mem = memory(run.proc)
        cold, ready = run.cold_start_s, run.ready_s
        comparison = None if args.no_peer else compare(args, run, card, payloads, served)
        scored = score_a_file(run, card, args.score_rows, d) if args.score_rows else None
        if scored and comparison:
            service_bulk = comparison["summary"]["figures"]["bulk_binary_rows_per_s"].get(SERVICE, {})
            scored["service_rows_per_s"] = service_bulk.get("median", 0.0)
        nowait = None if args.no_nowait else no_wait(
            run, payloads, served.min_workers, d, args.warmup / 4, args.bulk_connections
        )
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": info | {"load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "model_config": {k: v for k, v in served.to_dict().items() if k != "handler"},
        "duration_s": args.duration,
        "single": single,
        "ping": ping,
        "bulk": bulk,
        "model": model,
        "cold_start_s": cold,
        "ready_s": ready,
        "memory": mem,
        "comparison": comparison,
        "score": scored,
        "nowait": nowait,
    }


# ---------------------------------------------------------------- the peers


def service_system(run: Running, payloads: Payloads) -> peers.System:
    """The service as the peers are measured: its 1,000-row JSON figure with the columnar answer
    (labels and probabilities: the peers' content), its binary figure .npy both ways."""
    url = run.predict_url
    return peers.System(
        SERVICE,
        peers.Load(url, payloads.single, JSON_CT),
        peers.Load(url, payloads.bulk_json, JSON_CT, COLUMNAR_CT),
        peers.Load(url, payloads.bulk_npy, NPY_CT, NPY_CT),
        lambda answer: np.asarray(orjson.loads(answer)["probabilities"], dtype=np.float64),
        root_pid=run.proc.pid,
    )


def same_answers(system: peers.System, expected: np.ndarray) -> None:
    """Its single-row answer holds the in-process model's probabilities (else Unavailable)."""
    load = system.single
    accept = COLUMNAR_CT if system.name == SERVICE else ""
    resp = requests.post(load.url, data=load.body.read_bytes(), timeout=10,
                         headers={"Content-Type": load.content_type, "Accept": accept or "*/*"})
    if resp.status_code != 200:
        raise peers.Unavailable(f"a single-row request answered {resp.status_code}: {resp.text[:200]}")
    got = system.probabilities(resp.content)
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=0, atol=1e-5):
        raise peers.Unavailable(f"answered {got.tolist()}, the model in-process {expected.tolist()}")


def load_run(load: peers.Load, connections: int, seconds: float, name: str, rows: int) -> LoadResult:
    return wrk(load.url, connections, seconds, name, load.body, load.content_type, rows, load.accept, load.header)


def measure_round(system: peers.System, seconds: float, bulk_connections: int, bulk_rows: int,
                  ) -> dict[str, float]:
    """Every figure of one system, back to back; for the bulk figures also the CPU its
    processes spent per request (all of them: for the service the JVM, workers and exporter)."""
    busy = load_run(system.single, 64, seconds, "single", 1)
    lone = load_run(system.single, 1, seconds, "lone", 1)
    bulk_json, json_cpu = cpu_per_request(system.root_pid, partial(load_run, system.bulk_json, bulk_connections,
                                                                   seconds, "bulk-json", bulk_rows))
    out = {"single_rps": busy.rps, "single_p50_ms": busy.p50_ms, "single_p99_ms": busy.p99_ms,
           "lone_p50_ms": lone.p50_ms, "bulk_json_rows_per_s": bulk_json.rows_per_s,
           "errors": float(busy.errors + lone.errors + bulk_json.errors)}
    if json_cpu is not None:
        out["bulk_json_cpu_us"] = json_cpu
    if system.bulk_binary is not None:
        binary, binary_cpu = cpu_per_request(system.root_pid, partial(load_run, system.bulk_binary,
                                                                      bulk_connections, seconds, "bulk-binary",
                                                                      bulk_rows))
        out |= {"bulk_binary_rows_per_s": binary.rows_per_s, "errors": out["errors"] + binary.errors}
        if binary_cpu is not None:
            out["bulk_binary_cpu_us"] = binary_cpu
    return out


def cpu_per_request(root_pid: int | None, load: Callable[[], LoadResult]) -> tuple[LoadResult, float | None]:
    """The load's result, and the CPU µs per request the process tree under ``root_pid``
    spent over it (None without a root process)."""
    if root_pid is None:
        return load(), None
    before = tree_cpu_seconds(root_pid)
    result = load()
    return result, (tree_cpu_seconds(root_pid) - before) / max(result.requests, 1) * 1e6


def tree_cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and every descendant alive now."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def compare(args: argparse.Namespace, run: Running, card: ModelCard, payloads: Payloads,
            served: model_config.ModelConfig) -> dict[str, Any]:
    """The service and each peer up at once (idle while another is measured), each checked to
    give the in-process model's probabilities, warmed up, then ``args.repeats`` rounds of every
    figure on every system (the order rotating, so no system always runs first), with the
    machine's load average before and after."""
    workers, batch, delay = served.min_workers, served.batch_size, float(served.max_batch_delay_ms)
    model_file = torch.jit.load(str(ARTIFACTS / card.model_file), map_location="cpu").eval()
    with torch.inference_mode():
        x = torch.tensor(orjson.loads(payloads.single.read_bytes())["instances"], dtype=torch.float32)
        expected = torch.softmax(model_file(x), dim=1).double().numpy()
    systems = [service_system(run, payloads)]
    unavailable: dict[str, str] = {}
    folder = payloads.single.parent
    with contextlib.ExitStack() as stack:
        for key in args.peers:
            say(f"bench: starting the {key} peer ({workers} workers, batch {batch}, delay {delay:g} ms)")
            try:
                if card.runtime != "torchscript":
                    raise peers.Unavailable(f"the peers serve the TorchScript file; this archive is {card.runtime}")
                system = stack.enter_context(peers.PEERS[key](payloads, folder, workers, batch, delay))
                same_answers(system, expected)
                systems.append(system)
            except peers.Unavailable as exc:
                unavailable[key] = str(exc)
                say(f"bench: {key} peer: not measured: {exc}")
        for system in systems[1:]:
            say(f"bench: warming up {system.name}")
            load_run(system.single, 64, args.warmup / 4, "warm-up", 1)
            load_run(system.bulk_json, args.bulk_connections, args.warmup / 8, "warm-up", payloads.bulk_rows)
            if system.bulk_binary is not None:
                load_run(system.bulk_binary, args.bulk_connections, args.warmup / 8, "warm-up", payloads.bulk_rows)
        before = [round(v, 2) for v in os.getloadavg()]
        rounds: list[dict[str, dict[str, float]]] = []
        for i in range(args.repeats):
            order = systems[i % len(systems):] + systems[: i % len(systems)]
            say(f"bench: round {i + 1}/{args.repeats}: " + ", ".join(s.name for s in order))
            rounds.append({s.name: measure_round(s, args.duration, args.bulk_connections, payloads.bulk_rows)
                           for s in order})
        after = [round(v, 2) for v in os.getloadavg()]
    summary = summarise(rounds)
    return {
        "summary": summary,
        "rounds": rounds,
        "unavailable": unavailable,
        "tuning": {s.name: s.tuning for s in systems[1:]},
        "notes": {s.name: s.why_no_binary for s in systems if s.why_no_binary},
        "load": {"cpus": os.cpu_count(), "before": before, "after": after},
        "duration_s": args.duration,
        "bulk_rows": payloads.bulk_rows,
    }


def score_a_file(run: Running, card: ModelCard, n_rows: int, seconds: float = 5.0, connections: int = 4,
                 chunk_rows: int = 5000) -> dict[str, Any]:
    """``python -m client score`` on a generated CSV of ``n_rows`` rows (not kept), in its own
    process: rows/s end to end (read, send, answer, write), the client's CPU and peak memory;
    beside it the service's rate for the same requests (its first chunk, header and all, sent
    by wrk at the same connections with the same Accept), the rate of a client that costs
    nothing. Measured twice: on shared cores, and with the server on one core and the client
    (and wrk) on the other, as a client runs on a machine of its own."""
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        src, chunk = Path(tmp) / "rows.csv", Path(tmp) / "chunk.csv"
        write_rows_csv(src, card, n_rows)
        with open(src, "rb") as f:
            chunk.write_bytes(b"".join(itertools.islice(f, chunk_rows + 1)))
        shared = score_beside_wrk(run, src, chunk, n_rows, seconds, connections, chunk_rows)
        pinned = None
        if len(os.sched_getaffinity(0)) >= 2:
            with pinned_apart(psutil.Process(run.proc.pid)):
                pinned = score_beside_wrk(run, src, chunk, n_rows, seconds, connections, chunk_rows)
        return shared | {"mib": src.stat().st_size / 2**20, "pinned": pinned}


def score_beside_wrk(run: Running, src: Path, chunk: Path, n_rows: int, seconds: float, connections: int,
                     chunk_rows: int) -> dict[str, Any]:
    say(f"bench: {seconds:g}s of {chunk_rows:,}-row CSV chunks, Accept .npy, at {connections} connections (wrk)")
    service = wrk(run.predict_url, connections, seconds, "score-csv", chunk, "text/csv", chunk_rows, NPY_CT)
    say(f"bench: scoring a {n_rows:,}-row CSV ({src.stat().st_size / 2**20:.0f} MiB) with python -m client score")
    dst = src.with_name("scored.csv")
    cmd = [sys.executable, "-m", "client", "score", str(src), "--out", str(dst), "--no-progress",
           "--url", run.settings.inference.url, "--model", run.settings.model_name,
           "--connections", str(connections), "--chunk-rows", str(chunk_rows)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, proc.memory_info().rss)
        time.sleep(0.1)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"bench: python -m client score failed: {err}")
    with open(dst, "rb") as f:
        written = sum(1 for _ in f) - 1
    if written != n_rows:
        raise SystemExit(f"bench: client score wrote {written} rows of {n_rows}")
    scoring = float(err.split(" rows in ", 1)[1].split(" s ", 1)[0])  # its own clock: after the imports
    retries = int(err.split(" requests, ", 1)[1].split(" resent", 1)[0]) if " resent" in err else 0
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"rows": n_rows, "seconds": wall, "rows_per_s": n_rows / wall, "scoring_seconds": scoring,
            "scoring_rows_per_s": n_rows / scoring, "client_cpu_s": cpu, "connections": connections,
            "chunk_rows": chunk_rows, "retries": retries, "client_rss_mib": peak / 2**20,
            "service_csv": service.to_dict()}


@contextlib.contextmanager
def pinned_apart(server: psutil.Process) -> Iterator[None]:
    """Every thread of the server's processes on the first CPU, this process (and so the
    load generators it starts) on the others; restored after. Linux sets affinity per thread,
    and a new thread inherits its creator's, so this holds for threads started meanwhile."""
    cpus = sorted(os.sched_getaffinity(0))
    saved: dict[int, set[int]] = {}
    for proc in [server, *server.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            for thread in proc.threads():
                with contextlib.suppress(OSError):
                    saved[thread.id] = os.sched_getaffinity(thread.id)
                    os.sched_setaffinity(thread.id, cpus[:1])
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus[1:])
    say(f"bench: the server on CPU {cpus[0]}, the client and wrk on CPU {','.join(map(str, cpus[1:]))}")
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)
        for tid, mask in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, mask)


def write_rows_csv(path: Path, card: ModelCard, n_rows: int) -> None:
    """A header and ``n_rows`` rows drawn around the training statistics, float32 text."""
    rng = np.random.default_rng(1)
    mean, std = np.array(card.normalisation["mean"]), np.array(card.normalisation["std"])
    with open(path, "wb") as f:
        f.write(",".join(card.feature_names).encode() + b"\n")
        for start in range(0, n_rows, 100_000):
            rows = (mean + std * rng.standard_normal((min(100_000, n_rows - start), card.n_features)))
            f.write(orjson.dumps(rows.astype(np.float32), option=orjson.OPT_SERIALIZE_NUMPY)[2:-2]
                    .replace(b"],[", b"\n") + b"\n")


def register_no_wait(settings: ServeSettings, workers: int) -> tuple[str, dict[str, Any]]:
    """The instance's archive registered again through the management API with
    ``max_batch_delay=0`` (the only way to a delay of 0: TorchServe 0.12 reads 0 in a .mar's
    config, or in the ``models`` property, as its default of 100 ms), and the original scaled to
    0 workers so the two never share the cores. Returns its prediction URL and describe answer."""
    name = f"{settings.model_name}_nowait"
    say(f"bench: {name}: the same .mar registered with max_batch_delay=0 ({workers} workers)")
    mgmt = settings.management.url
    register: dict[str, str | int] = {"url": f"{settings.model_name}.mar", "model_name": name, "max_batch_delay": 0,
                                      "initial_workers": workers, "synchronous": "true"}
    resp = requests.post(f"{mgmt}/models", params=register, timeout=180)
    if resp.status_code != 200:
        raise SystemExit(f"bench: registering {name} failed: {resp.status_code} {resp.text[:300]}")
    scale: dict[str, str | int] = {"min_worker": 0, "max_worker": 0, "synchronous": "true"}
    resp = requests.put(f"{mgmt}/models/{settings.model_name}", params=scale, timeout=180)
    if resp.status_code != 200:  # both registrations would share the cores: the numbers would not hold
        raise SystemExit(f"bench: scaling {settings.model_name} to 0 workers failed: {resp.status_code} "
                         f"{resp.text[:300]}")
    described: dict[str, Any] = requests.get(f"{mgmt}/models/{name}", timeout=10).json()[0]
    return f"{settings.inference.url}/predictions/{name}", described


def no_wait(run: Running, payloads: Payloads, workers: int, seconds: float, warmup: float,
            bulk_connections: int) -> dict[str, Any]:
    """The shipped .mar with a batch delay of 0 (``register_no_wait``): a batch then takes the
    first request and at most one more already queued (Model.pollBatch), so a lone request never
    waits, and bulk requests spread over both workers."""
    url, described = register_no_wait(run.settings, workers)
    npy = next(f for f in bulk_formats(payloads) if f[0] == "binary")
    wrk(url, 64, warmup, "warm-up", payloads.single)
    wrk(url, bulk_connections, warmup / 2, "warm-up", npy[1], npy[2], payloads.bulk_rows, npy[3])
    lone = wrk(url, 1, seconds, "nowait-single", payloads.single)
    busy = wrk(url, 64, seconds, "nowait-single", payloads.single)
    binary, binary_cpu = cpu_per_request(run.proc.pid, partial(wrk, url, bulk_connections, seconds, "nowait-binary",
                                                               npy[1], npy[2], payloads.bulk_rows, npy[3]))
    json_bulk, json_cpu = cpu_per_request(run.proc.pid, partial(wrk, url, bulk_connections, seconds, "nowait-json",
                                                                payloads.bulk_json, JSON_CT, payloads.bulk_rows))
    columnar, columnar_cpu = cpu_per_request(run.proc.pid, partial(  # the answer the peers are compared on
        wrk, url, bulk_connections, seconds, "nowait-columnar", payloads.bulk_json, JSON_CT, payloads.bulk_rows,
        COLUMNAR_CT))
    return {"max_batch_delay": described["maxBatchDelay"], "batch_size": described["batchSize"],
            "lone": lone.to_dict(), "busy": busy.to_dict(),
            "binary": binary.to_dict() | {"cpu_us": binary_cpu}, "json": json_bulk.to_dict() | {"cpu_us": json_cpu},
            "columnar": columnar.to_dict() | {"cpu_us": columnar_cpu}}


def plot(results: dict[str, Any], path: Path) -> None:
    """One PNG, read at a glance: per system, single-row throughput at 64 connections, its p50
    and p99, a lone request's p50, and 1,000-row JSON and binary rows/s; bars are medians over
    the rounds, whiskers their range. Without a comparison, the service's latency and throughput
    against connections."""
    import matplotlib  # noqa: PLC0415 - bench-only dependency (requirements-bench.lock)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    comparison = results.get("comparison")
    m = results["machine"]
    title = (f"{results['when']}: {m['cores']} cores, load average {m['load_average_at_start']} at the start, "
             f"{m.get('load_average_at_end')} at the end")
    if not comparison:
        fig, ax = plt.subplots(figsize=(6, 4))
        conns = [r["connections"] for r in results["single"]]
        ax.plot(conns, [r["rps"] for r in results["single"]], "o-", label="single-row predictions")
        ax.plot(conns, [r["rps"] for r in results["ping"]], "s--", color="grey", label="/ping")
        ax.set(xscale="log", xlabel="connections", ylabel="requests/s")
        ax.legend(fontsize=8)
        fig.suptitle(title, fontsize=8)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    summary = comparison["summary"]
    systems = summary["systems"]
    colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b"]

    def bars(ax: Any, keys: list[tuple[str, str]], ylabel: str, title: str, scale: float = 1.0) -> None:
        width = 0.8 / len(keys)
        for k, (key, label) in enumerate(keys):
            for i, system in enumerate(systems):
                st = summary["figures"][key].get(system)
                if not st:
                    ax.text(i + (k - (len(keys) - 1) / 2) * width, 0, "n/a", ha="center", va="bottom", fontsize=7)
                    continue
                med = st["median"] / scale
                err = [[med - st["min"] / scale], [st["max"] / scale - med]]
                ax.bar(i + (k - (len(keys) - 1) / 2) * width, med, width, yerr=err, capsize=3,
                       color=colours[i % len(colours)], alpha=1.0 if k == 0 else 0.55,
                       hatch="" if k == 0 else "//", label=label if i == 0 else None)
                ax.text(i + (k - (len(keys) - 1) / 2) * width, med, f"{med:.3g}", ha="center", va="bottom",
                        fontsize=7)
        ax.set_xticks(range(len(systems)), [s.replace(" (", "\n(") for s in systems], fontsize=7)
        ax.set(ylabel=ylabel, title=title)
        if len(keys) > 1:
            ax.legend(fontsize=7)

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    bars(axes[0][0], [("single_rps", "req/s")], "requests/s", "single-row JSON, 64 connections: throughput")
    bars(axes[0][1], [("single_p50_ms", "p50"), ("single_p99_ms", "p99")], "ms",
         "single-row JSON, 64 connections: latency (lower is better)")
    bars(axes[1][0], [("lone_p50_ms", "p50")], "ms", "a lone request (1 connection): p50 (lower is better)")
    bars(axes[1][1], [("bulk_json_rows_per_s", "1,000-row JSON"), ("bulk_binary_rows_per_s", "1,000-row binary")],
         "million rows/s", "bulk, 8 connections", scale=1e6)
    fig.suptitle(f"{title}; medians of {summary['rounds']} rounds, whiskers: min-max", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def update_readme(readme: Path, table: str, results: dict[str, Any]) -> None:
    """Replace the block between the bench markers in benchmarks/README.md."""
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if not readme.is_file() or start not in readme.read_text():
        return
    m = results["machine"]
    cfg = ", ".join(f"{k}={v}" for k, v in results["model_config"].items())
    head = (
        f"Run at {results['when']} on {m['cores']} cores ({m['cpu']}, {m['memory_gib']} GiB), "
        f"load average {m['load_average_at_start']} at the start, {results['duration_s']:g} s per measurement. "
        f"{m['note']}\n\nServed with {cfg}.\n\n"
    )
    text = readme.read_text()
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    readme.write_text(
        f"{before}{start}\n{head}{table}\n![latency and throughput](results/latest.png)\n{end}{after}"
    )


# ---------------------------------------------------------------- the sweep


def sweep(args: argparse.Namespace, card: ModelCard, payloads: Payloads) -> dict[str, Any]:
    """Try each setting with the real handler and config, changing only the three knobs."""
    base = model_config.load()
    rows = []
    grid = list(itertools.product(args.sweep_workers, args.sweep_batch, args.sweep_delay))
    from model.archive import archive  # noqa: PLC0415 - imports torch-model-archiver paths

    for i, (workers, batch, delay) in enumerate(grid, 1):
        if batch == 1 and delay != args.sweep_delay[0]:
            continue  # the delay means nothing without batching
        say(f"bench sweep {i}/{len(grid)}: workers={workers} batchSize={batch} maxBatchDelay={delay}")
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
            tmp_path = Path(tmp)
            knobs = {"min_workers": workers, "max_workers": workers, "batch_size": batch, "max_batch_delay_ms": delay}
            config = base.with_values(**knobs)
            cfg_path = tmp_path / "model-config.yaml"
            cfg_path.write_text(config.to_yaml())
            with contextlib.redirect_stdout(sys.stderr):
                archive(ARTIFACTS, tmp_path / "model_store", tmp_path / "build", cfg_path)
            with serving(card, payloads.single, model_store=tmp_path / "model_store") as run:
                # 0 in the .mar would mean 100 ms: a delay of 0 is registered through the API
                url = register_no_wait(run.settings, workers)[0] if delay == 0 else run.predict_url
                warm_up(run, payloads, args.warmup / 2, url)
                ping = wrk(run.ping_url, 64, args.sweep_duration, "ping")
                lone_ping = wrk(run.ping_url, 1, args.sweep_duration, "ping")
                lone = wrk(url, 1, args.sweep_duration, "single", payloads.single)
                single_cpu = CpuMeter(run.proc).measure(
                    partial(wrk, url, 64, args.sweep_duration, "single", payloads.single)
                )
                single = LoadResult(**{k: single_cpu[k] for k in LoadResult.__dataclass_fields__})
                bulk = wrk(
                    url,
                    args.bulk_connections,
                    args.sweep_duration,
                    "bulk-json",
                    payloads.bulk_json,
                    JSON_CT,
                    payloads.bulk_rows,
                )
        row = {
            "workers": workers,
            "batch_size": batch,
            "max_batch_delay": delay,
            "rps": single.rps,
            "p50_ms": single.p50_ms,
            "p99_ms": single.p99_ms,
            "errors": single.errors + bulk.errors,
            "ping_rps": ping.rps,
            "bulk_rows_per_s": bulk.rows_per_s,
            "cold_start_s": run.cold_start_s,
            "cpu_us_per_req_frontend": single_cpu["cpu_us_per_req_frontend"],
            "cpu_us_per_req_workers": single_cpu["cpu_us_per_req_workers"],
            "lone_p50_ms": lone.p50_ms,
            "ping_lone_p50_ms": lone_ping.p50_ms,
        }
        say(
            f"  -> {single.rps:.0f} req/s, p99 {single.p99_ms:.1f} ms, /ping {ping.rps:.0f}, "
            f"bulk {bulk.rows_per_s:.0f} rows/s"
        )
        rows.append(row)
    best = best_setting(rows, args.p99_budget)
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(args.note),
        "p99_budget_ms": args.p99_budget,
        "rows": rows,
        "best": best,
    }


# ---------------------------------------------------------------- main


def peer_goals(results: dict[str, Any]) -> list[Target]:
    comparison = results.get("comparison")
    return peer_targets(comparison["summary"], results.get("score")) if comparison else []


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="benchmarks.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    p.add_argument("--warmup", type=float, default=24.0, help="seconds of uncounted warm-up")
    p.add_argument("--connections", type=ints, default=[1, 16, 64])
    p.add_argument("--bulk-connections", type=int, default=8)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--note", default="", help="conditions to state with the results")
    p.add_argument("--no-readme", action="store_true", help="do not update benchmarks/README.md")
    p.add_argument("--no-peer", action="store_true", help="skip the peers (FastAPI, LitServe, Triton)")
    p.add_argument("--peers", type=lambda t: t.split(","), default=list(peers.PEERS),
                   help=f"which peers, comma-separated (default {','.join(peers.PEERS)})")
    p.add_argument("--repeats", type=int, default=3, help="rounds of every figure on every system")
    p.add_argument("--quick", action="store_true",
                   help="one short round of everything (2 s per figure, short warm-up, 20k-row CSV, no delay-0 run)")
    p.add_argument("--no-nowait", action="store_true",
                   help="skip the same .mar registered with maxBatchDelay 0 (lone request and bulk)")
    p.add_argument("--score-rows", type=int, default=1_000_000,
                   help="rows of the generated CSV python -m client score scores (0: skip)")
    p.add_argument("--sweep", action="store_true", help="try workers x batchSize x maxBatchDelay")
    p.add_argument("--sweep-workers", type=ints, default=[2, 3])
    p.add_argument("--sweep-batch", type=ints, default=[1, 8, 64])
    # 0 is registered through the management API: TorchServe 0.12 reads 0 in a .mar as 100 ms
    p.add_argument("--sweep-delay", type=ints, default=[0, 1, 2])
    p.add_argument("--sweep-duration", type=float, default=5.0)
    p.add_argument("--p99-budget", type=float, default=25.0, help="ms, for the sweep's verdict")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.repeats, args.connections = 2.0, 4.0, 1, [1, 64]
        args.score_rows, args.no_nowait = min(args.score_rows, 20_000), True
    ensure_wrk()
    card = ModelCard.load(ARTIFACTS / METADATA_FILE)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-payloads-") as tmp:
        payloads = make_payloads(card, Path(tmp))
        if args.sweep:
            result = sweep(args, card, payloads)
            table = sweep_markdown(result["rows"], result["best"], args.p99_budget)
            (args.out / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
            (args.out / "sweep.md").write_text(table)
            print(table)
            return 0
        results = full_run(args, card, payloads)
    table = markdown(results) + compare_markdown(results)
    (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "latest.md").write_text(table)
    plot(results, args.out / "latest.png")
    if not args.no_readme:
        update_readme(HERE / "README.md", table, results)
    print(table)
    print(f"results: {args.out}/latest.json, latest.md, latest.png")
    missed = [t for t in targets(results) + peer_goals(results) if not t.met]
    if missed:
        print("targets missed: " + "; ".join(f"{t.what} {t.value} (goal {t.goal})" for t in missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
