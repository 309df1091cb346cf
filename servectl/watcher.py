"""Automatic rollback: while a canary runs, or for a window after a rollout or a promote, compare
the new version with the previous one on the service's own metrics (the model-metrics exporter:
``PREFIX_requests_total``, ``PREFIX_handler_seconds``, ``PREFIX_predictions_total``, each labelled
``model_version``) and roll back when a threshold of serve_config/lifecycle.yaml (``watch``) is
breached: the 5xx share of the new version's answers, its p99 handler time against the
previous version's, and its predicted-class mix against the previous version's (total
variation distance). Why is said in the log and in ``PREFIX_auto_rollbacks_total``
(the exporter reads the events file; an alert in serve_config/rules fires on it).

The new version is judged on what it answered since the watch began; the previous version on
all it answered since the start (its traffic may stop after a promote). A canary is judged only
on the answers the split gave it, counted where its clients saw them (the canary proxy's
``split.log``: TorchServe's own 5xx, "Worker died." and a full queue, count as much as the
handler's); requests sent straight to its pinned-version path never count for or against it.

A tick whose metrics cannot be read is retried at the next one; ``max_failed_ticks`` failed
ticks in a row are a breach of their own (``scrape``): a watcher that cannot see must not go
on pretending to protect.
"""

from __future__ import annotations

import json
import os
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
    max_failed_ticks: int

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
            max_failed_ticks=int(doc["max_failed_ticks"]),
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
        resp = requests.get(f"{settings.model_metrics.url}/metrics", timeout=5)
        resp.raise_for_status()
        families = list(text_string_to_metric_families(resp.text))
    except (requests.RequestException, ValueError) as exc:
        raise ServeError(f"model metrics at {settings.model_metrics.url} not readable: {exc}") from None
    stats: dict[str, Stats] = defaultdict(Stats)
    for family in families:
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


@dataclass
class Watch:
    """One watch: the new version, the one it is compared with, and where its counts began."""

    new: str
    old: str
    is_canary: bool
    start: Stats
    split_offset: int = 0
    failed_ticks: int = 0

    def judged(self, settings: ServeSettings) -> tuple[Stats, Stats]:
        """(the new version since the watch began, the old one since the start)."""
        stats = scrape(settings)
        new = stats.get(self.new, Stats()).minus(self.start)
        if self.is_canary:
            split = split_answers(settings, self.new, self.split_offset)
            new.requests, new.errors = split.requests, split.errors
        return new, stats.get(self.old, Stats())


def begin(settings: ServeSettings) -> Watch:
    state = lifecycle.current_state(settings)
    new, old = (state.canary, state.default) if state.canary else (state.default, state.previous)
    if new is None or old is None:
        raise ServeError("nothing to watch: no canary, and no previous default loaded")
    return Watch(new, old, state.canary is not None, scrape(settings).get(new, Stats()), split_log_size(settings))


def tick(settings: ServeSettings, watch: Watch, config: WatchConfig) -> tuple[bool, str | None]:
    """One look: (still watching, the breach if any). A failed look is retried at the next tick
    until ``max_failed_ticks`` of them in a row, which is a breach."""
    try:
        state = lifecycle.current_state(settings)
        if (state.canary or state.default) != watch.new:
            lifecycle.say(f"watch of {watch.new} ended: changed by hand")
            return False, None
        new, old = watch.judged(settings)
    except ServeError as exc:
        watch.failed_ticks += 1
        lifecycle.say(f"tick {watch.failed_ticks}/{config.max_failed_ticks} failed: {exc}")
        if watch.failed_ticks >= config.max_failed_ticks:
            return False, f"scrape: no metrics for {watch.failed_ticks} ticks in a row ({exc})"
        return True, None
    watch.failed_ticks = 0
    reason = breach(new, old, config)
    return reason is None, reason


@lifecycle.exclusive
def roll_back(settings: ServeSettings, watch: Watch, reason: str) -> str | None:
    """Undo the watched version under the lifecycle lock, if it is still what the watch began
    with (an operator may have promoted or rolled back meanwhile): then record why."""
    lifecycle.say(f"AUTO-ROLLBACK of {watch.new} to {watch.old}: {reason}")
    try:
        if watch.is_canary:
            canary.abandon(settings, watch.new)
        else:
            lifecycle.rollback(settings, watch.new)
    except ServeError as exc:
        lifecycle.say(f"auto-rollback not done: {exc}")
        return None
    record(settings, watch.new, watch.old, reason)
    return reason


def watch(settings: ServeSettings, config: WatchConfig | None = None) -> str | None:
    """Watch the new version until the window ends (or the canary or default changes by hand);
    roll back on a breach and return why (None when it held)."""
    config = config or WatchConfig.load()
    watched = begin(settings)
    lifecycle.say(f"watching {watched.new} against {watched.old} for {config.window_s:g} s")
    deadline = time.monotonic() + config.window_s
    while time.monotonic() < deadline:
        time.sleep(config.interval_s)  # the sampling period of a bounded watch, not a wait for a condition
        going, reason = tick(settings, watched, config)
        if reason:
            return roll_back(settings, watched, reason)
        if not going:
            return None
    lifecycle.say(f"watch of {watched.new} ended: no threshold breached in {config.window_s:g} s")
    return None
