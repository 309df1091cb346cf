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
import time
from dataclasses import dataclass, field

from servectl.config.lifecycle import Watch as WatchConfig
from servectl.config.settings import ServeSettings
from servectl.errors import ServeError
from servectl.instance import processes
from servectl.instance.launch import EVENTS_FILE
from servectl.instance.management import Management
from servectl.release import canary, lifecycle
from servectl.release.watch_sources import Stats, deaths_between, scrape, split_answers, split_log_size, worker_pids

__all__ = ["Stats", "Watch", "breach", "watch"]  # tests import Stats from here


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


@dataclass
class Watch:
    """One watch: the new version, the one it is compared with, and where its counts began."""

    new: str
    old: str
    is_canary: bool
    start: Stats
    split_offset: int = 0
    pids: dict[str, int] = field(default_factory=dict)  # the new version's workers at the last look
    deaths: int = 0
    failed_ticks: int = 0
    server: int | None = None  # the pid of the TorchServe it watches: another one (a restart) ends the watch

    def judged(self, settings: ServeSettings) -> tuple[Stats, Stats]:
        """(the new version since the watch began, the old one since the start)."""
        stats = scrape(settings)
        new = stats.get(self.new, Stats()).minus(self.start)
        if self.is_canary:
            split = split_answers(settings, self.new, self.split_offset)
            new.requests, new.errors = split.requests, split.errors
        return new, stats.get(self.old, Stats())


def begin(settings: ServeSettings) -> Watch:
    state = lifecycle.current_state(settings, Management(settings))
    new, old = (state.canary, state.default) if state.canary else (state.default, state.previous)
    if new is None or old is None:
        raise ServeError("nothing to watch: no canary, and no previous default loaded")
    start = scrape(settings).get(new, Stats())
    pids = worker_pids(settings, new)
    return Watch(new, old, state.canary is not None, start, split_log_size(settings), pids,
                 server=processes.running_pid(settings))


def died(settings: ServeSettings, watch: Watch, config: WatchConfig) -> str | None:
    """A breach when more of the new version's workers died than ``max_worker_deaths``: each
    death failed its whole batch with TorchServe's own "Worker died." (or a response timeout)."""
    now = worker_pids(settings, watch.new)
    watch.deaths += deaths_between(watch.pids, now)
    watch.pids = now
    if watch.deaths > config.max_worker_deaths:
        return f"worker_deaths: {watch.deaths} worker(s) of {watch.new} died (max {config.max_worker_deaths})"
    return None


def tick(settings: ServeSettings, watch: Watch, config: WatchConfig) -> tuple[bool, str | None]:
    """One look: (still watching, the breach if any). A failed look is retried at the next tick
    until ``max_failed_ticks`` of them in a row, which is a breach. A watch ends when its server
    stopped or restarted ('make stop'): the next start restores the record, not this watch."""
    if processes.running_pid(settings) != watch.server:
        lifecycle.say(settings, f"watch of {watch.new} ended: the server it watched stopped or restarted")
        return False, None
    try:
        state = lifecycle.current_state(settings, Management(settings))
        if (state.canary or state.default) != watch.new:
            lifecycle.say(settings, f"watch of {watch.new} ended: changed by hand")
            return False, None
        new, old = watch.judged(settings)
        dead = died(settings, watch, config)
    except ServeError as exc:
        watch.failed_ticks += 1
        lifecycle.say(settings, f"tick {watch.failed_ticks}/{config.max_failed_ticks} failed: {exc}")
        if watch.failed_ticks >= config.max_failed_ticks:
            return False, f"scrape: no metrics for {watch.failed_ticks} ticks in a row ({exc})"
        return True, None
    watch.failed_ticks = 0
    reason = dead or breach(new, old, config)
    return reason is None, reason


@lifecycle.exclusive
def roll_back(settings: ServeSettings, watch: Watch, reason: str) -> str | None:
    """Undo the watched version under the lifecycle lock, if it is still what the watch began
    with (an operator may have promoted or rolled back meanwhile): then record why."""
    lifecycle.say(settings, f"AUTO-ROLLBACK of {watch.new} to {watch.old}: {reason}")
    try:
        if watch.is_canary:
            canary.abandon(settings, watch.new)
        else:
            lifecycle.rollback(settings, watch.new)
    except ServeError as exc:
        lifecycle.say(settings, f"auto-rollback not done: {exc}")
        return None
    record(settings, watch.new, watch.old, reason)
    return reason


def watch(settings: ServeSettings, config: WatchConfig | None = None) -> str | None:
    """Watch the new version until the window ends (or the canary or default changes by hand);
    roll back on a breach and return why (None when it held)."""
    config = config or settings.lifecycle.watch
    return follow(settings, begin(settings), config)


def follow(settings: ServeSettings, watched: Watch, config: WatchConfig) -> str | None:
    """The ticks of one watch, from its beginning to the end of its window or a breach."""
    lifecycle.say(settings, f"watching {watched.new} against {watched.old} for {config.window_seconds:g} s")
    deadline = time.monotonic() + config.window_seconds
    while time.monotonic() < deadline:
        time.sleep(config.interval_seconds)  # the sampling period of a bounded watch, not a wait for a condition
        going, reason = tick(settings, watched, config)
        if reason:
            return roll_back(settings, watched, reason)
        if not going:
            return None
    lifecycle.say(settings, f"watch of {watched.new} ended: no threshold breached in {config.window_seconds:g} s")
    return None
