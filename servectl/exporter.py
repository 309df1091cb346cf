"""The model-metrics endpoint beside TorchServe's: ``/metrics`` on ``model_metrics_address``.

It serves what every handler worker recorded into ``PROMETHEUS_MULTIPROC_DIR``
(``handlers.telemetry``: fine latency histograms, predictions by class, drift), merged, plus
what only an outside process can see: the workers' status, CPU and memory, read through
the management API and /proc on each scrape.

servectl runs it as a launcher so that it lives in TorchServe's process group:

    python servectl/exporter.py --listen 127.0.0.1:8083 ... -- torchserve --start ...

forks (the child serves metrics) and the parent execs TorchServe, keeping its pid. Stopping
the group stops both, and the exporter also exits when TorchServe does. It imports nothing
from this repo, so it runs by path from any working directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PREFIX = "tabular"


class WorkerCollector:
    """Worker status, CPU seconds and resident memory of one model, at scrape time."""

    def __init__(self, management_url: str, model_name: str, key_file: Path | None = None, timeout: float = 2.0):
        self.url = f"{management_url.rstrip('/')}/models/{model_name}"
        self.model_name = model_name
        self.key_file = key_file
        self.timeout = timeout

    def describe(self) -> list:
        return []  # collected live: nothing to check at registration

    def status(self) -> dict | None:
        import requests

        headers = {}
        if self.key_file is not None and self.key_file.is_file():
            try:
                headers["Authorization"] = f"Bearer {json.loads(self.key_file.read_text())['management']['key']}"
            except (ValueError, KeyError, TypeError):
                pass
        try:
            resp = requests.get(self.url, headers=headers, timeout=self.timeout)
            data = resp.json() if resp.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return None
        return data[0] if isinstance(data, list) and data else None

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        status = self.status()
        up = GaugeMetricFamily(
            f"{PREFIX}_management_up", "1 when the management API described the model", labels=["model_name"]
        )
        up.add_metric([self.model_name], 1.0 if status else 0.0)
        yield up
        if not status:
            return
        model = [self.model_name, str(status.get("modelVersion", ""))]
        labels = ["model_name", "model_version"]
        workers = status.get("workers", [])
        by_status = Counter(str(w.get("status", "UNKNOWN")) for w in workers)
        by_status.setdefault("READY", 0)  # an alert needs the zero, not an absent series
        count = GaugeMetricFamily(f"{PREFIX}_workers", "Workers of the model, by status", labels=[*labels, "status"])
        for state, n in sorted(by_status.items()):
            count.add_metric([*model, state], n)
        yield count
        wanted = GaugeMetricFamily(f"{PREFIX}_workers_min", "minWorkers the model is configured for", labels=labels)
        wanted.add_metric(model, float(status.get("minWorkers", 0)))
        yield wanted
        cpu = CounterMetricFamily(
            f"{PREFIX}_worker_cpu_seconds",
            "CPU time (user + system) of each worker process",
            labels=[*labels, "worker"],
        )
        memory = GaugeMetricFamily(
            f"{PREFIX}_worker_resident_memory_bytes",
            "Resident memory of each worker process",
            labels=[*labels, "worker"],
        )
        for worker in workers:
            usage = process_usage(worker.get("pid"))
            if usage is not None:
                name = str(worker.get("id", worker.get("pid")))
                cpu.add_metric([*model, name], usage[0])
                memory.add_metric([*model, name], usage[1])
        yield cpu
        yield memory


def process_usage(pid: Any) -> tuple[float, float] | None:
    """(CPU seconds, resident bytes) of a live process, None when it is gone."""
    import psutil

    try:
        proc = psutil.Process(int(pid))
        with proc.oneshot():
            times = proc.cpu_times()
            return times.user + times.system, float(proc.memory_info().rss)
    except (psutil.Error, TypeError, ValueError):
        return None


def registry(multiproc_dir: Path, collector: WorkerCollector | None) -> Any:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    reg = CollectorRegistry()
    MultiProcessCollector(reg, path=str(multiproc_dir))
    if collector is not None:
        reg.register(collector)
    return reg


def serve(host: str, port: int, reg: Any, parent: int | None) -> None:
    """Serve ``/metrics`` until ``parent`` (TorchServe) is gone, or forever without one."""
    from prometheus_client import start_http_server

    httpd, _ = start_http_server(port, addr=host, registry=reg)
    print(f"model metrics on http://{host}:{httpd.server_port}/metrics", flush=True)
    while parent is None or os.getppid() == parent:
        time.sleep(1.0)
    httpd.shutdown()


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:  # launcher mode: what follows is TorchServe's command line
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(prog="exporter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT for /metrics")
    parser.add_argument("--multiproc-dir", type=Path, required=True, help="the workers' PROMETHEUS_MULTIPROC_DIR")
    parser.add_argument("--management", help="management API URL, for worker status, CPU and memory")
    parser.add_argument("--model", help="model name (with --management)")
    parser.add_argument("--key-file", type=Path, help="TorchServe's key_file.json when token auth is on")
    args = parser.parse_args(argv)
    host, port = parse_listen(args.listen)
    parent = None
    if command:
        parent = os.getpid()
        if os.fork() != 0:  # the parent becomes TorchServe: same pid, session and group
            os.execv(command[0], command)
    collector = WorkerCollector(args.management, args.model, args.key_file) if args.management and args.model else None
    try:
        serve(host, port, registry(args.multiproc_dir, collector), parent)
    except OSError as exc:
        print(f"exporter: cannot serve on {host}:{port}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # a forked child must not run the parent's exit handlers
