"""The model-metrics endpoint beside TorchServe's: ``/metrics`` on ``model_metrics_address``,
serving what ``servectl.metrics.worker_metrics`` collects.

servectl runs it as a launcher so that it lives in TorchServe's process group:

    python servectl/metrics/exporter.py --listen 127.0.0.1:8083 ... -- torchserve --start ...

forks (the child serves metrics) and the parent execs TorchServe, keeping its pid. Stopping
the group stops both, and the exporter also exits when TorchServe does. It runs by path
from any working directory (the repo root is put on ``sys.path`` for that).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
from pathlib import Path

if not __package__:  # run by path (servectl's launcher): make the servectl package importable
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from prometheus_client import CollectorRegistry, start_http_server  # noqa: E402

from common.metric_names import PREFIX  # noqa: E402
from servectl.metrics.worker_metrics import WorkerCollector, process_usage, registry  # noqa: E402
from servectl.waiting import wait_for  # noqa: E402

# tests use the collection names from here too
__all__ = ["PREFIX", "WorkerCollector", "main", "parse_listen", "process_usage", "registry", "serve"]


def serve(host: str, port: int, reg: CollectorRegistry, parent: int | None) -> None:
    """Serve ``/metrics`` until ``parent`` (TorchServe) is gone, or forever without one."""
    httpd, _ = start_http_server(port, addr=host, registry=reg)
    print(f"model metrics on http://{host}:{httpd.server_port}/metrics", flush=True)
    if parent is None:
        threading.Event().wait()  # standalone: until killed
    else:
        wait_for(lambda: os.getppid() != parent, math.inf, f"TorchServe (pid {parent}) to exit", interval=1.0)
        httpd.shutdown()


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exporter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT for /metrics")
    parser.add_argument("--multiproc-dir", type=Path, required=True, help="the workers' PROMETHEUS_MULTIPROC_DIR")
    parser.add_argument("--management", help="management API URL, for worker status, CPU and memory")
    parser.add_argument("--model", help="model name (with --management)")
    parser.add_argument("--key-file", type=Path, help="TorchServe's key_file.json when token auth is on")
    parser.add_argument("--events-file", type=Path, help="servectl.release.watcher's auto-rollback events (JSON lines)")
    parser.add_argument("command", nargs="*", help="after --: TorchServe's command line, to exec (launcher mode)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    host, port = parse_listen(args.listen)
    parent = None
    if args.command:
        parent = os.getpid()
        if os.fork() != 0:  # the parent becomes TorchServe: same pid, session and group
            os.execv(args.command[0], args.command)
    collector = WorkerCollector(args.management, args.model, args.key_file) if args.management and args.model else None
    try:
        serve(host, port, registry(args.multiproc_dir, collector, args.events_file), parent)
    except OSError as exc:
        print(f"exporter: cannot serve on {host}:{port}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # a forked child must not run the parent's exit handlers
