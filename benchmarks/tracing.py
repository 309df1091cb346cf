"""The cost of tracing per batch, in-process: the handler from the built .mar, loaded by
TorchServe's own loader three times (OTLP endpoint empty; a live receiver; a closed port, i.e. a
receiver that is down), each timed over the same batches. ``make bench-tracing``; results in
docs/observability.md. The frontend's share (HTTP, queueing) is the same in all three, so it is
left out: this isolates what the handler adds."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
MAR = REPO / "model_store" / "tabular_classifier.mar"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def load_service(model_dir: Path, endpoint: str, batch_size: int) -> Any:
    """A worker's Service for the .mar unpacked in ``model_dir`` with ``otlp_endpoint`` set."""
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
    from ts.model_loader import TsModelLoader

    config_file = model_dir / "model-config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["handler"]["observability"]["otlp_endpoint"] = endpoint
    config_file.write_text(yaml.safe_dump(config))
    metrics = MetricsCacheYamlImpl(config_file_path=str(REPO / "serve_config/metrics.yaml"))
    metrics.initialize_cache()
    sys.path.insert(0, str(model_dir))
    try:
        service = TsModelLoader().load(
            "tabular_classifier", str(model_dir), "tabular_handler.py", None, batch_size, None, True, metrics
        )
    finally:
        sys.path.remove(str(model_dir))
    service.set_cl_socket(None)
    return service


def batch(n: int, row: list[float]) -> list[dict[str, Any]]:
    body = json.dumps({"instances": [row]}).encode()
    headers = [{"name": b"Content-Type", "value": b"application/json"},
               {"name": b"traceparent", "value": TRACEPARENT.encode()}]  # fmt: skip
    return [
        {"requestId": f"r{i}".encode(), "headers": headers,
         "parameters": [{"name": "body", "contentType": "application/json", "value": body}]}
        for i in range(n)
    ]  # fmt: skip


def timed(service: Any, requests: list[dict[str, Any]], rounds: int, idle_s: float = 0.0) -> dict[str, float]:
    """Median, p99 and max of ``rounds`` calls; ``idle_s``: the process sleeps that long before
    each call, as a worker waits out TorchServe's batch window (its caches then run cold)."""
    for _ in range(50):  # warm-up
        service.predict(requests)
    took = []
    for _ in range(rounds):
        if idle_s:
            time.sleep(idle_s)
        t = time.perf_counter()
        service.predict(requests)
        took.append(time.perf_counter() - t)
    took.sort()
    return {"median_us": statistics.median(took) * 1e6, "p99_us": took[int(len(took) * 0.99)] * 1e6,
            "max_us": took[-1] * 1e6}  # fmt: skip


def closed_port_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/traces"  # nothing listens: every export fails


def measure(endpoint: str, tmp: Path, rounds: int) -> dict[str, dict[str, float]]:
    """Per-batch times of a handler exporting to ``endpoint`` (empty: tracing off)."""
    model_dir = tmp / str(len(list(tmp.iterdir())))
    zipfile.ZipFile(MAR).extractall(model_dir)
    service = load_service(model_dir, endpoint, 64)
    results = {f"{n} x 1 row": timed(service, batch(n, [0.0] * 10), rounds // max(1, n // 8)) for n in (1, 64)}
    tracer = service._entry_point.__self__.observer.tracing  # the handler behind TorchServe's Service
    if tracer is not None:  # flush, so the receiver's count is complete
        tracer.shutdown()
    return results


def print_load(when: str) -> None:
    """The load average beside a run's numbers: they hold only for a quiet machine."""
    with open("/proc/loadavg") as fh:
        print(f"load average {when}: {fh.read().split()[:3]}; {os.cpu_count()} CPUs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    print_load("before")
    tmp = Path(tempfile.mkdtemp())
    # the receiver in a process of its own, as a collector would be
    receiver = subprocess.Popen([sys.executable, "-m", "tests.support.otlp_receiver"], cwd=REPO, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert receiver.stdout is not None
    try:
        modes = {"off": "", "on (receiver up)": receiver.stdout.readline().strip(),
                 "on (receiver down)": closed_port_endpoint()}  # fmt: skip
        results = {mode: measure(endpoint, tmp, args.rounds) for mode, endpoint in modes.items()}
    finally:
        spans, _ = receiver.communicate(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    for mode, sizes in results.items():
        for size, r in sizes.items():
            print(f"{mode:20s} {size:12s} median {r['median_us']:8.1f} us  p99 {r['p99_us']:8.1f} us  "
                  f"max {r['max_us']:8.1f} us")  # fmt: skip
    print(f"spans received by the live receiver: {spans.strip()}")
    print_load("after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
