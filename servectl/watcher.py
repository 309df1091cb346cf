"""Automatic rollback: while a canary runs, or for a window after a rollout or a promote, compare
the new version with the previous one on the service's own metrics (the model-metrics exporter:
``PREFIX_requests_total``, ``PREFIX_handler_seconds``, ``PREFIX_predictions_total``, each labelled
``model_version``) and roll back when a threshold of serve_config/lifecycle.yaml (``watch``) is
breached: the 5xx share of the new version's answers, its p99 handler time against the
previous version's, and its predicted-class mix against the previous version's (total
variation distance). Why is said in the log and in ``PREFIX_auto_rollbacks_total``
(the exporter reads the events file; an alert in serve_config/rules fires on it).

The new version is judged on what it answered since the watch began; the previous version on
all it answered since the start (its traffic may stop after a promote).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from handlers.metric_names import PREFIX
from servectl import canary, lifecycle
from servectl.errors import ServeError
from servectl.launch import EVENTS_FILE
from servectl.settings import ServeSettings


@dataclass(frozen=True)
class WatchConfig:
    window_s: float
    interval_s: float
    min_requests: int
    max_error_ratio: float
    max_p99_ratio: float
    max_class_shift: float

    @classmethod
    def load(cls, path: Path = lifecycle.LIFECYCLE_CONFIG) -> WatchConfig:
        doc = yaml.safe_load(path.read_text())["watch"]
        return cls(
            window_s=float(doc["window_seconds"]),
            interval_s=float(doc["interval_seconds"]),
            min_requests=int(doc["min_requests"]),
            max_error_ratio=float(doc["max_error_ratio"]),
            max_p99_ratio=float(doc["max_p99_ratio"]),
            max_class_shift=float(doc["max_class_shift"]),
        )


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
        text = requests.get(f"{settings.model_metrics.url}/metrics", timeout=5).text
    except requests.RequestException as exc:
        raise ServeError(f"model metrics at {settings.model_metrics.url} not answering: {exc}") from None
    stats: dict[str, Stats] = defaultdict(Stats)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("model_name") != settings.model_name or "model_version" not in s.labels:
                continue
            v = stats[s.labels["model_version"]]
            if s.name == f"{PREFIX}_requests_total":
                v.requests += s.value
                v.errors += s.value if s.labels.get("code", "").startswith("5") else 0.0
            elif s.name == f"{PREFIX}_handler_seconds_bucket":
                le = float(s.labels["le"])
                v.buckets[le] = v.buckets.get(le, 0.0) + s.value
            elif s.name == f"{PREFIX}_predictions_total":
                c = s.labels["predicted_class"]
                v.classes[c] = v.classes.get(c, 0.0) + s.value
    return dict(stats)


def breach(new: Stats, old: Stats, config: WatchConfig) -> str | None:
    """Why ``new`` is worse than ``old`` beyond a threshold (None while it is not, or too few answers)."""
    if new.requests < config.min_requests:
        return None
    if new.error_ratio > config.max_error_ratio:
        return f"error_ratio: {new.error_ratio:.3f} of its answers were 5xx (max {config.max_error_ratio})"
    if old.p99 and new.p99 > config.max_p99_ratio * old.p99:
        return f"p99: handler p99 {new.p99 * 1000:.1f} ms vs {old.p99 * 1000:.1f} ms (max {config.max_p99_ratio}x)"
    mix_new, mix_old = new.class_mix(), old.class_mix()
    if mix_new and mix_old:
        shift = 0.5 * sum(abs(mix_new.get(c, 0.0) - mix_old.get(c, 0.0)) for c in set(mix_new) | set(mix_old))
        if shift > config.max_class_shift:
            return f"class_mix: predicted-class distribution moved by {shift:.2f} (max {config.max_class_shift})"
    return None


def record(settings: ServeSettings, version: str, previous: str, reason: str) -> None:
    """The auto-rollback, for the exporter's counter and for people: one JSON line."""
    event = {"time": time.time(), "model": settings.model_name, "version": version, "previous": previous,
             "kind": reason.split(":", 1)[0], "reason": reason}
    with open(settings.run_dir / EVENTS_FILE, "a") as out:
        out.write(json.dumps(event) + "\n")


def watch(settings: ServeSettings, config: WatchConfig | None = None) -> str | None:
    """Watch the new version until the window ends (or the canary or default changes by hand);
    roll back on a breach and return why (None when it held)."""
    config = config or WatchConfig.load()
    state = lifecycle.current_state(settings)
    new, old = (state.canary, state.default) if state.canary else (state.default, state.previous)
    if new is None or old is None:
        raise ServeError("nothing to watch: no canary, and no previous default loaded")
    start = scrape(settings).get(new, Stats())
    lifecycle.say(f"watching {new} against {old} for {config.window_s:g} s")
    deadline = time.monotonic() + config.window_s
    while time.monotonic() < deadline:
        time.sleep(config.interval_s)  # the sampling period of a bounded watch, not a wait for a condition
        state = lifecycle.current_state(settings)
        if (state.canary or state.default) != new:
            lifecycle.say(f"watch of {new} ended: changed by hand")
            return None
        stats = scrape(settings)
        reason = breach(stats.get(new, Stats()).minus(start), stats.get(old, Stats()), config)
        if reason:
            lifecycle.say(f"AUTO-ROLLBACK of {new} to {old}: {reason}")
            record(settings, new, old, reason)
            if state.canary:
                canary.abandon(settings, state)
            else:
                lifecycle.rollback(settings)
            return reason
    lifecycle.say(f"watch of {new} ended: no threshold breached in {config.window_s:g} s")
    return None
