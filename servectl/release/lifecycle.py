"""Rollout, rollback and retire of model versions on a running instance, and the restore of
the recorded versions after a start (README "Shipping a new model version").

Every step leaves the default path answering: a candidate is loaded beside the default,
checked through the real server, then made the default with one ``set-default`` call (the
frontend switches new requests at once; requests already queued finish on their version);
the previous default stays loaded, so a rollback is one ``set-default`` too. A version is
unloaded only after its queue drained.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

import requests

from common.model_card import ModelCard
from servectl.config import model_config
from servectl.config.settings import ServeSettings
from servectl.errors import ServeError
from servectl.instance import draining
from servectl.instance.management import Management
from servectl.instance.readiness import load_refusal, log_tail, ready_workers
from servectl.instance.tokens import auth_headers
from servectl.release import oplock
from servectl.store import versions
from servectl.store.versions import State
from servectl.waiting import WaitTimeout, wait_for

PREFLIGHT_ROWS_PER_REQUEST = 8
P = ParamSpec("P")
R = TypeVar("R")


def exclusive(op: Callable[Concatenate[ServeSettings, P], R]) -> Callable[Concatenate[ServeSettings, P], R]:
    """Run a lifecycle operation under the instance's lifecycle lock (servectl.release.oplock)."""

    @functools.wraps(op)
    def locked(settings: ServeSettings, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with oplock.held(settings, settings.lifecycle.lock_timeout_seconds):
            return op(settings, *args, **kwargs)

    return locked


def say(settings: ServeSettings, message: str) -> None:
    """A progress line of a lifecycle operation, in serve_config/lifecycle.yaml's log_format.
    A print, not a logging handler: the line goes to whatever stdout is now (the CLI's, a
    test's capture), and json.dumps is all the JSON a three-key line needs."""
    if settings.lifecycle.log_format == "json":
        print(json.dumps({"timestamp": datetime.now(UTC).isoformat(), "logger": "servectl", "message": message}),
              flush=True)  # fmt: skip
    else:
        print(f"servectl: {message}", flush=True)


# ---------------------------------------------------------------- loading a version


def load_version(settings: ServeSettings, api: Management, version: str, timeout: float) -> None:
    """Register ``version`` from the store and wait for its workers; unload it again and say
    why when its handler refuses it (e.g. an archive whose model file fails its sha256)."""
    mar = versions.archive_of(settings, version)
    workers = model_config.load().min_workers
    since = time.time()
    api.register(mar.name, workers)

    def ready() -> bool:
        refused = load_refusal(settings, since)
        if refused:
            raise ServeError(f"{settings.model_name} {version} refused to load: {refused}")
        return ready_workers(api.versions().get(version)) >= workers

    try:
        wait_for(ready, timeout, f"{settings.model_name} {version} READY", interval=0.25)
    except (ServeError, WaitTimeout) as exc:
        api.unregister(version)
        detail = "" if isinstance(exc, ServeError) else "\n" + log_tail(settings)
        raise ServeError(f"{exc}{detail}") from None


# ---------------------------------------------------------------- pre-flight


def served_accuracy(settings: ServeSettings, version: str, x: Any, y: Any) -> float:
    """Accuracy of ``version``'s answers, through the inference API, on rows ``x``."""
    url = f"{settings.inference.url}/predictions/{settings.model_name}/{version}"
    # small requests, so that every worker of the candidate runs its first (slower, TorchScript
    # profiling) batches here rather than in the watcher's window
    chunk = min(PREFLIGHT_ROWS_PER_REQUEST, model_config.load().max_rows)
    right = 0
    for start in range(0, len(x), chunk):
        rows = x[start : start + chunk].tolist()
        resp = requests.post(url, json={"instances": rows}, headers=auth_headers(settings, "inference"), timeout=60)
        if resp.status_code != 200:
            raise ServeError(f"pre-flight: {version} answered {resp.status_code}: {resp.text[:300]}")
        if resp.headers.get("X-Model-Version") != version:
            raise ServeError(f"pre-flight: asked {version}, answered by {resp.headers.get('X-Model-Version')}")
        ids = [p["class_id"] for p in resp.json()["predictions"]]
        right += sum(int(i == int(t)) for i, t in zip(ids, y[start : start + chunk].tolist()))
    return right / len(x)


def preflight_problems(settings: ServeSettings, candidate: ModelCard, current: ModelCard | None) -> list[str]:
    """What stops ``candidate`` from becoming the default ([] when nothing does)."""
    problems = []
    if current is not None and candidate.feature_names != current.feature_names:
        problems.append(f"feature names differ from {current.version}'s: {list(candidate.feature_names)}")
    if current is not None and candidate.class_names != current.class_names:
        problems.append(f"class names differ from {current.version}'s: {list(candidate.class_names)}")
    split = versions.test_split_of(versions.archive_of(settings, candidate.version))
    served = served_accuracy(settings, candidate.version, split["x"], split["y"])
    recorded = float(candidate.metrics["test"]["accuracy"])
    slack = settings.lifecycle.preflight_accuracy_slack
    say(settings, f"pre-flight: {candidate.version} answers {served:.4f} on its test split (card: {recorded:.4f})")
    if served < recorded - slack - 1e-12:
        problems.append(f"served accuracy {served:.4f} is below the card's {recorded:.4f}")
    return problems


def card_of_version(settings: ServeSettings, version: str) -> ModelCard | None:
    """The card of a loaded version: its versioned archive's, else the start-up archive's."""
    built = versions.built(settings)
    if version in built:
        return versions.card_of(built[version])
    if settings.mar.is_file() and versions.card_of(settings.mar).version == version:
        return versions.card_of(settings.mar)
    return None


# ---------------------------------------------------------------- the state


def current_state(settings: ServeSettings, api: Management) -> State:
    """The record, reconciled with what TorchServe has loaded now."""
    loaded = api.versions()
    default = api.default_version()
    if not loaded or default is None:
        raise ServeError(f"no version of {settings.model_name} is loaded: is the server running ('make serve-bg')?")
    state = State.load(settings) or State(default=default)
    state.default = default
    state.loaded = sorted(loaded, key=lambda v: (v != default, v))
    if state.previous not in loaded:
        state.previous = None
    if state.canary not in loaded or state.canary == default:
        state.canary, state.canary_percent = None, 0.0
    return state


# ---------------------------------------------------------------- the operations


@exclusive
def rollout(settings: ServeSettings, version: str, force: bool = False, timeout: float = 120.0) -> State:
    """Load ``version`` beside the default, check it, make it the default."""
    t0 = time.monotonic()
    api = Management(settings)
    state = current_state(settings, api)
    if version == state.default:
        raise ServeError(f"{version} is already the default")
    if state.canary is not None:
        raise ServeError(f"a canary of {state.canary} runs: 'make promote' or 'make rollback' first")
    prepare_candidate(settings, api, state, version, force, timeout)
    api.set_default(version)
    state.previous, state.default = state.default, version
    state.loaded = sorted(set(state.loaded) | {version})
    state.save(settings)
    took = time.monotonic() - t0
    say(settings, f"{version} is the default ({state.previous} stays loaded for 'make rollback'); {took:.1f} s")
    return state


def prepare_candidate(
    settings: ServeSettings, api: Management, state: State, version: str, force: bool, timeout: float = 120.0
) -> None:
    """Load ``version`` beside the default (room made first) and pre-flight it through the
    server; a refused candidate is unloaded again, unless ``force``."""
    candidate = versions.card_of(versions.archive_of(settings, versions.check_version(version)))
    if version not in state.loaded:
        make_room(settings, api, state)
        say(settings, f"loading {version} beside {state.default} ...")
        load_version(settings, api, version, timeout)
    problems = preflight_problems(settings, candidate, card_of_version(settings, state.default))
    if problems and not force:
        api.unregister(version)
        raise ServeError(f"{version} refused (FORCE=1 overrides):\n  " + "\n  ".join(problems))
    for problem in problems:
        say(settings, f"FORCED despite: {problem}")


def make_room(settings: ServeSettings, api: Management, state: State) -> None:
    """Retire the oldest versions that are neither default nor previous until one more fits."""
    limit = settings.lifecycle.max_loaded_versions
    spare = [v for v in state.loaded if v not in (state.default, state.previous, state.canary)]
    while len(state.loaded) + 1 > limit and spare:
        retire_loaded(settings, api, spare.pop(0))
        state.loaded = [v for v in state.loaded if v in api.versions()]
    if len(state.loaded) + 1 > limit:
        raise ServeError(f"{len(state.loaded)} versions loaded, max_loaded_versions is {limit}: retire one first")


def expected_default(state: State, expect: str) -> None:
    """Refuse to undo ``expect`` unless it is still the default the last operation set: a
    rollback is a compare-and-swap, never a toggle (after the watcher rolled ``expect`` back,
    an operator's ``make rollback`` must not make it the default again)."""
    if state.default != expect:
        raise ServeError(
            f"rollback of {expect} refused: {state.default} is the default, not {expect} "
            "(already rolled back, e.g. by the watcher: 'make versions' shows the state)"
        )


@exclusive
def rollback(settings: ServeSettings, expect: str) -> State:
    """Make the previous default the default again (one call: it is still loaded), if the
    default is still ``expect``, the version this rollback means to undo."""
    t0 = time.monotonic()
    api = Management(settings)
    state = current_state(settings, api)
    expected_default(state, expect)
    if state.previous is None:
        raise ServeError("no previous default is loaded: nothing to roll back to")
    api.set_default(state.previous)
    state.previous, state.default = state.default, state.previous
    state.save(settings)
    took = time.monotonic() - t0
    say(settings, f"{state.default} is the default again ({state.previous} stays loaded); {took:.2f} s")
    return state


@exclusive
def retire(settings: ServeSettings, version: str) -> State:
    """Unload a version that is not the default, once no request for it is in flight."""
    return retire_loaded(settings, Management(settings), version)


def retire_loaded(settings: ServeSettings, api: Management, version: str) -> State:
    """``retire`` with the operation's management client (a rollout making room calls it)."""
    t0 = time.monotonic()
    state = current_state(settings, api)
    if version == state.default:
        raise ServeError(f"{version} is the default: roll out or roll back to another version first")
    if version == state.canary:
        raise ServeError(f"{version} is the canary: 'make rollback' ends the canary first")
    if version not in state.loaded:
        raise ServeError(f"{version} is not loaded (loaded: {', '.join(state.loaded)})")
    drain(settings, api, version)
    api.unregister(version)
    state.loaded = [v for v in state.loaded if v != version]
    if state.previous == version:
        state.previous = None
    state.save(settings)
    say(settings, f"{version} unloaded; {time.monotonic() - t0:.1f} s")
    return state


def drain(settings: ServeSettings, api: Management, version: str) -> None:
    """Wait until ``version`` has no pending request and got none for ``drain.quiet_seconds``."""
    quiet = settings.lifecycle.drain
    try:
        wait_for(lambda: draining.quiet_for(settings, api, quiet.quiet_seconds, only=version),
                 quiet.timeout_seconds, f"{version} to drain", interval=0.1)  # fmt: skip
    except WaitTimeout as exc:
        raise ServeError(f"{exc}: still getting requests, so it stays loaded") from None


@exclusive
def restore(settings: ServeSettings, timeout: float = 120.0) -> State:
    """After a start: load the other recorded versions and set the recorded default again
    (TorchServe 0.12 ignores defaultVersion at start-up)."""
    recorded = State.load(settings)
    api = Management(settings)
    if recorded is None:
        state = current_state(settings, api)
        state.save(settings)
        return state
    built = versions.built(settings)
    for version in recorded.loaded:
        if version not in api.versions() and version in built:
            load_version(settings, api, version, timeout)
    if recorded.default in api.versions():
        api.set_default(recorded.default)
    state = current_state(settings, api)
    state.previous = recorded.previous if recorded.previous in state.loaded else None
    state.save(settings)
    return state


# ---------------------------------------------------------------- the table


def table(settings: ServeSettings) -> str:
    """Every version built or loaded: default, READY workers, accuracy, sha256, created."""
    built = versions.built(settings)
    try:
        api = Management(settings, timeout=3)
        loaded, default = api.versions(), api.default_version()
    except ServeError:
        loaded, default = {}, None
    state = State.load(settings)
    rows = [("VERSION", "DEFAULT", "LOADED", "READY", "ACCURACY", "SHA256", "CREATED", "ARCHIVE")]
    for version in sorted(set(built) | set(loaded)):
        card = versions.card_of(built[version]) if version in built else card_of_version(settings, version)
        role = "*" if version == default else ""
        if state and version == state.previous and not role:
            role = "previous"
        if state and version == state.canary and not role:
            role = f"canary:{state.canary_percent:g}%"
        rows.append(
            (
                version,
                role,
                "yes" if version in loaded else "no",
                str(ready_workers(loaded.get(version))) if version in loaded else "-",
                f"{float(card.metrics['test']['accuracy']):.4f}" if card else "?",
                card.sha256[:12] if card else "?",
                card.created_at if card else "?",
                built[version].name if version in built else "(not in the store)",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if not loaded:
        lines.append(f"(no server answering on {settings.management.url}: built versions only)")
    return "\n".join(lines)
