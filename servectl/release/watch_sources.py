"""What the watcher (servectl.release.watcher) reads: the model-metrics exporter's per-version series,
the canary proxy's log of the answers its split gave (the status each client saw, TorchServe's
own 5xx and nginx's 502/504 included), and the workers of a version as the management API lists
them (TorchServe restarts a dead worker under the same id in a new process).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field

import requests

from common.metric_names import PREFIX
from common.prometheus import samples, sum_by
from servectl.config.settings import ServeSettings
from servectl.errors import ServeError
from servectl.instance.management import Management
from servectl.release import canary


@dataclass
class Stats:
    """One version's cumulative counters, as the exporter serves them."""

    requests: float = 0.0
    errors: float = 0.0  # answers with a 5xx code
    buckets: dict[float, float] = field(default_factory=dict)  # handler_seconds: le -> cumulative count
    classes: dict[str, float] = field(default_factory=dict)

    def minus(self, earlier: Stats) -> Stats:
        return Stats(
            self.requests - earlier.requests,
            self.errors - earlier.errors,
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            {c: n - earlier.classes.get(c, 0.0) for c, n in self.classes.items()},
        )

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p99(self) -> float:
        """The upper bound of the bucket that holds the 99th percentile of batch handler times."""
        total = max(self.buckets.values(), default=0.0)
        for le in sorted(self.buckets):
            if total and self.buckets[le] >= 0.99 * total:
                return le
        return 0.0

    def class_mix(self) -> dict[str, float]:
        total = sum(self.classes.values())
        return {c: n / total for c, n in self.classes.items()} if total else {}


def scrape(settings: ServeSettings) -> dict[str, Stats]:
    """Every version's counters from the model-metrics exporter."""
    try:
        resp = requests.get(f"{settings.model_metrics.url}/metrics", timeout=5)
        resp.raise_for_status()
        parsed = samples(resp.text)
    except (requests.RequestException, ValueError) as exc:
        raise ServeError(f"model metrics at {settings.model_metrics.url} not readable: {exc}") from None
    model = {"model_name": settings.model_name}
    stats: dict[str, Stats] = defaultdict(Stats)
    for (version, code), n in sum_by(parsed, f"{PREFIX}_requests_total", ("model_version", "code"), model).items():
        stats[version].requests += n
        stats[version].errors += n if code.startswith("5") else 0.0
    for (version, le), n in sum_by(parsed, f"{PREFIX}_handler_seconds_bucket", ("model_version", "le"), model).items():
        stats[version].buckets[float(le)] = n
    classes = sum_by(parsed, f"{PREFIX}_predictions_total", ("model_version", "predicted_class"), model)
    for (version, c), n in classes.items():
        stats[version].classes[c] = n
    return dict(stats)


def split_log_size(settings: ServeSettings) -> int:
    try:
        return os.path.getsize(canary.proxy_dir(settings) / canary.SPLIT_LOG)
    except OSError:
        return 0


def split_answers(settings: ServeSettings, version: str, offset: int) -> Stats:
    """The answers the canary proxy's split gave ``version`` after byte ``offset`` of its log:
    requests and 5xx as the clients saw them."""
    path = f"/predictions/{settings.model_name}/{version}"
    seen = Stats()
    try:
        with open(canary.proxy_dir(settings) / canary.SPLIT_LOG, "rb") as log:
            log.seek(offset)
            lines = log.read().splitlines()
    except OSError:
        return seen
    for line in lines:
        try:
            answer = json.loads(line)
        except ValueError:
            continue  # a line being written
        if answer.get("uri") == path:
            seen.requests += 1
            seen.errors += 1 if int(answer.get("status", 0)) >= 500 else 0
    return seen


def worker_pids(settings: ServeSettings, version: str) -> dict[str, int]:
    """Worker id -> process id of ``version``'s workers."""
    described = Management(settings, timeout=5).versions().get(version, {})
    return {str(w.get("id")): int(w["pid"]) for w in described.get("workers", []) if w.get("pid")}


def deaths_between(before: dict[str, int], now: dict[str, int]) -> int:
    """Workers whose process changed or went away between two looks (each one a death: its
    batch was answered "Worker died.")."""
    return sum(1 for worker, pid in before.items() if now.get(worker) != pid)
