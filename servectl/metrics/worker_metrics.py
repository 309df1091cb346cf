"""What the model-metrics endpoint serves: the metrics every handler worker recorded into
``PROMETHEUS_MULTIPROC_DIR`` (``handlers.telemetry``: latency histograms, predictions by
class, drift), merged, plus what only an outside process can see: the workers' status, CPU
and memory, read through the management API and psutil on each scrape.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from common.metric_names import PREFIX
from servectl.instance.tokens import read_keys


class WorkerCollector:
    """Worker status, CPU seconds and resident memory of every loaded version of one model, at
    scrape time (a canary's dead workers must show as much as the default's)."""

    def __init__(self, management_url: str, model_name: str, key_file: Path | None = None, timeout: float = 2.0):
        self.url = f"{management_url.rstrip('/')}/models/{model_name}/all"
        self.model_name = model_name
        self.key_file = key_file
        self.timeout = timeout

    def describe(self) -> list[Any]:
        return []  # collected live: nothing to check at registration

    def status(self) -> list[dict[str, Any]]:
        """Every loaded version's describe answer ([] when the management API gave none)."""
        key = read_keys(self.key_file).get("management") if self.key_file is not None else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            resp = requests.get(self.url, headers=headers, timeout=self.timeout)
            data = resp.json() if resp.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return []
        return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []

    def collect(self) -> Iterator[Any]:
        described = self.status()
        up = GaugeMetricFamily(
            f"{PREFIX}_management_up", "1 when the management API described the model", labels=["model_name"]
        )
        up.add_metric([self.model_name], 1.0 if described else 0.0)
        yield up
        if not described:
            return
        labels = ["model_name", "model_version"]
        count = GaugeMetricFamily(f"{PREFIX}_workers", "Workers of the model, by status", labels=[*labels, "status"])
        wanted = GaugeMetricFamily(f"{PREFIX}_workers_min", "minWorkers the model is configured for", labels=labels)
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
        for status in described:
            add_version(status, [self.model_name, str(status.get("modelVersion", ""))], count, wanted, cpu, memory)
        yield from (count, wanted, cpu, memory)


def add_version(
    status: dict[str, Any], model: list[str], count: Any, wanted: Any, cpu: Any, memory: Any
) -> None:
    """One version's workers into the four families."""
    workers = status.get("workers", [])
    by_status = Counter(str(w.get("status", "UNKNOWN")) for w in workers)
    by_status.setdefault("READY", 0)  # an alert needs the zero, not an absent series
    for state, n in sorted(by_status.items()):
        count.add_metric([*model, state], n)
    wanted.add_metric(model, float(status.get("minWorkers", 0)))
    for worker in workers:
        usage = process_usage(worker.get("pid"))
        if usage is not None:
            name = str(worker.get("id", worker.get("pid")))
            cpu.add_metric([*model, name], usage[0])
            memory.add_metric([*model, name], usage[1])


def process_usage(pid: Any) -> tuple[float, float] | None:
    """(CPU seconds, resident bytes) of a live process, None when it is gone."""
    try:
        proc = psutil.Process(int(pid))
        with proc.oneshot():
            times = proc.cpu_times()
            return times.user + times.system, float(proc.memory_info().rss)
    except (psutil.Error, TypeError, ValueError):
        return None


class AutoRollbackCollector:
    """``PREFIX_auto_rollbacks_total``: servectl.release.watcher's rollbacks since this start, by the
    version rolled back and the kind of breach, read from its events file on each scrape."""

    def __init__(self, events_file: Path) -> None:
        self.events_file = events_file

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        family = CounterMetricFamily(
            f"{PREFIX}_auto_rollbacks", "Automatic rollbacks by servectl's watcher, by version and breach",
            labels=["model_name", "model_version", "kind"],
        )  # fmt: skip
        tally: Counter[tuple[str, str, str]] = Counter()
        try:
            lines = self.events_file.read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                event = json.loads(line)
                tally[(str(event["model"]), str(event["version"]), str(event["kind"]))] += 1
            except (ValueError, KeyError, TypeError):
                continue  # a line being written
        for labels, count in sorted(tally.items()):
            family.add_metric(list(labels), count)
        yield family


def registry(
    multiproc_dir: Path, collector: WorkerCollector | None, events_file: Path | None = None
) -> CollectorRegistry:
    """The workers' multiprocess metrics, merged, plus ``collector``'s and the watcher's
    rollbacks on each scrape."""
    reg = CollectorRegistry()
    MultiProcessCollector(reg, path=str(multiproc_dir))
    if collector is not None:
        reg.register(collector)
    if events_file is not None:
        reg.register(AutoRollbackCollector(events_file))
    return reg
