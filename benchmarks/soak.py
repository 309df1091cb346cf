"""Soak: the load mix of tests/support/loadmix.py for minutes against a fresh TorchServe of its
own (free loopback ports, a temp run dir, always stopped), reporting per minute the errors
and latency percentiles, and the resident memory and open file descriptors of the frontend
and each worker at the start and the end.

    make soak                      # 5 minutes
    make soak SOAK_SECONDS=60      # any length

Exits non-zero on any 5xx, unanswered or wrong answer, a worker restart, or resource
growth over the limit (default 10 %). Writes build/soak.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from servectl.config.settings import REPO, ServeSettings, free_loopback_ports
from servectl.instance import launch, readiness
from servectl.instance.processes import running_pid, stop
from tests.support.loadmix import Mix, Report, reference, run


def processes(settings: ServeSettings) -> dict[str, psutil.Process]:
    """The Java frontend and each model worker of the instance, by role."""
    pid = running_pid(settings)
    if pid is None:
        raise RuntimeError(f"soak: no TorchServe of {settings.model_name} is running")
    pgid = os.getpgid(pid)
    found: dict[str, psutil.Process] = {}
    status = readiness.model_status(settings) or {}
    worker_pids = {w["pid"]: f"worker {w['id']}" for w in status.get("workers", [])}
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if os.getpgid(proc.pid) != pgid:
                continue
            if proc.pid in worker_pids:
                found[worker_pids[proc.pid]] = proc
            elif proc.info["name"] == "java":
                found["frontend"] = proc
            elif any("exporter" in part for part in proc.info["cmdline"] or []):
                found["exporter"] = proc
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def worker_identities(settings: ServeSettings) -> list[tuple[int, str]]:
    """(pid, start time) of each worker: a change over the soak means a worker restarted."""
    status = readiness.model_status(settings)
    if status is None:
        raise RuntimeError(f"soak: the management API did not answer for {settings.model_name}")
    return sorted((w["pid"], w["startTime"]) for w in status["workers"])


def resources(settings: ServeSettings) -> dict[str, dict[str, float]]:
    out = {}
    for role, proc in sorted(processes(settings).items()):
        with proc.oneshot():
            out[role] = {"pid": proc.pid, "rss_mib": round(proc.memory_info().rss / 2**20, 1), "fds": proc.num_fds()}
    return out


def growth(start: dict[str, dict[str, float]], end: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Relative growth (end / start - 1) per process and resource."""
    return {
        role: {k: round(end[role][k] / start[role][k] - 1, 3) for k in ("rss_mib", "fds") if start[role][k]}
        for role in start
        if role in end
    }


class Sampler(threading.Thread):
    """Resident memory of every process once a minute during the soak (after the warm-up), so
    the report shows whether memory levels off, not just where it ended."""

    def __init__(self, settings: ServeSettings, every: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.settings, self.every = settings, every
        self.samples: list[dict[str, Any]] = []
        self.stopped = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            rss = {role: r["rss_mib"] for role, r in resources(self.settings).items()}
            self.samples.append({"t_s": round(time.monotonic() - self.t0), "rss_mib": rss,
                                 "total_mib": round(sum(rss.values()), 1)})
            print(f"soak: {self.samples[-1]['t_s']} s: {self.samples[-1]['total_mib']} MiB {rss}", flush=True)


def per_minute(report: Report, seconds: float) -> list[dict[str, Any]]:
    """One row per minute of the run; answers that arrive after the end count in the last."""
    rows = []
    minutes = max(1, math.ceil(seconds / 60))
    for m in range(minutes):
        chunk = [r for r in report.results if min(int(r.t // 60), minutes - 1) == m]
        if not chunk:
            continue
        rows.append(
            {
                "minute": m + 1,
                "requests": len(chunk),
                "errors_5xx": sum(1 for r in chunk if r.status >= 500),
                "no_answer": sum(1 for r in chunk if r.status == 0),
                "wrong": sum(1 for r in chunk if r.problem),
                "latency_ms": report.latency_percentiles(chunk),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 300)))
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of load before the start sample")
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "soak.json")
    args = parser.parse_args()

    x, probs, features, classes, name = reference(str(REPO / "artifacts"))
    mix = Mix(x, features)
    run_dir = Path(tempfile.mkdtemp(prefix="soak-"))
    inference, management, metrics = free_loopback_ports(3)
    settings = ServeSettings.load(name, run_dir=run_dir).with_ports(inference, management, metrics)
    with open(run_dir / "torchserve.out", "ab") as log:
        proc = launch.start(settings, stdout=log)
    try:
        readiness.wait_ready(settings, timeout=180, alive=lambda: proc.poll() is None)
        url = settings.inference.url
        # the first requests allocate pools and caches: sample after a warm-up under the same load
        run(url, name, mix, probs, classes, seconds=args.warmup, connections=args.connections, seed=1)
        workers_before = worker_identities(settings)
        start = resources(settings)
        print(f"soak: {args.seconds:.0f} s, {args.connections} connections against {url}", flush=True)
        print("start:", json.dumps(start), flush=True)
        t0 = time.monotonic()
        sampler = Sampler(settings)
        sampler.start()
        report = run(url, name, mix, probs, classes, seconds=args.seconds, connections=args.connections, seed=2)
        sampler.stopped.set()
        sampler.join()
        end = resources(settings)
        workers_after = worker_identities(settings)
        elapsed = time.monotonic() - t0
    finally:
        stop(settings)

    grew = growth(start, end)
    over = {role: g for role, g in grew.items() if any(v > args.max_growth for v in g.values())}
    result = {
        "seconds": round(elapsed, 1),
        "summary": report.summary(),
        "per_minute": per_minute(report, args.seconds),
        "resources_start": start,
        "resources_end": end,
        "memory_per_minute": sampler.samples,
        "growth": grew,
        "worker_restarts": workers_before != workers_after,
        "problems": [r.problem for r in report.problems[:20]],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("summary", "per_minute", "growth", "worker_restarts")}, indent=2))
    print("end:", json.dumps(end))
    failed = []
    if report.server_errors or report.no_answer or report.problems:
        failed.append(f"{report.server_errors} 5xx, {report.no_answer} unanswered, {len(report.problems)} wrong")
    if result["worker_restarts"]:
        failed.append("a worker restarted")
    if over:
        failed.append(f"growth over {args.max_growth:.0%}: {over}")
    print(f"soak {'FAILED: ' + '; '.join(failed) if failed else 'passed'} (report: {args.out})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
