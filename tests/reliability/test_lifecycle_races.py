"""Lifecycle operations that meet: on a real instance of its own, with candidates repacked from
the built archive (the same model under other version numbers, so no training), each race of
issue 25 item 3 shown, and the watcher's blind spots of issue 25 item 7 and issue 20 item 2:
an exporter that stops answering, and a candidate whose workers die (TorchServe answers those
requests "Worker died." itself, which no handler metric counts)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from common.metric_names import PREFIX
from common.model_card import METADATA_FILE, ModelCard
from servectl.config.settings import ServeSettings
from servectl.errors import ServeError
from servectl.instance import launch, processes, readiness
from servectl.instance.management import Management
from servectl.release import canary, lifecycle, watcher
from servectl.store import digests, versions
from servectl.waiting import wait_for
from tests.conftest import ANSWER_TIMEOUT, REPO, free_ports
from tests.reliability.conftest import repacked_mar

CRASHING_HANDLER = '''"""Test only: the project's handler, except that once {arm!r} exists every batch ends the
worker process, as a crash would (TorchServe then answers its requests "Worker died.")."""
import os

from tabular_handler import TabularHandler


class CrashingHandler(TabularHandler):
    def handle(self, data, context):
        if os.path.exists({arm!r}):
            os._exit(1)
        return super().handle(data, context)
'''


def repack(settings: ServeSettings, source: str, version: str, handler: str | None = None) -> None:
    """``source``'s archive in the store as ``version`` (card and manifest say so), optionally
    with another handler module."""
    src = versions.archive_of(settings, source)
    with zipfile.ZipFile(src) as mar:
        card = {**json.loads(mar.read(METADATA_FILE)), "version": version}
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
    manifest["model"]["modelVersion"] = version
    if handler is not None:
        manifest["model"]["handler"] = "crashing_handler.py"
    change: dict[str, bytes | None] = {METADATA_FILE: json.dumps(card).encode(),
                                       "MAR-INF/MANIFEST.json": json.dumps(manifest).encode()}
    tmp = repacked_mar(src, settings.run_dir / f"repack-{version}", change)
    if handler is not None:
        with zipfile.ZipFile(tmp, "a") as mar:
            mar.writestr("crashing_handler.py", handler)
    target = settings.model_store / versions.archive_name(settings.model_name, version)
    tmp.rename(target)
    digests.record(settings.model_store, [target])


@pytest.fixture(scope="module")
def races(tmp_path_factory) -> Iterator[tuple[ServeSettings, str, str, Path]]:
    """A server on the built archive (version A) with B (the same model) and C (its workers die
    once the arm file exists) in its store; yields settings, A, B, C and the arm file."""
    work = tmp_path_factory.mktemp("races")
    store = work / "store"
    store.mkdir()
    card = ModelCard.load(REPO / "artifacts" / METADATA_FILE)
    for mar in (f"{card.model_name}.mar", f"{card.model_name}-{card.version}.mar"):
        digests.copy(REPO / "model_store" / mar, store)
    ports = free_ports(4)
    settings = ServeSettings.load(card.model_name, run_dir=work / "run", model_store=store)
    settings = settings.with_ports(ports[0], ports[1], ports[2], model_metrics=ports[3])
    settings.run_dir.mkdir()
    with open(settings.run_dir / "torchserve.out", "ab") as out:
        proc = launch.start(settings, stdout=out)
    try:
        readiness.wait_ready(settings, alive=lambda: proc.poll() is None)
        lifecycle.restore(settings)
        arm = work / "arm-crash"
        repack(settings, card.version, f"{card.version}.b")
        repack(settings, card.version, f"{card.version}.crash", CRASHING_HANDLER.format(arm=str(arm)))
        yield settings, card.version, f"{card.version}.b", arm
    finally:
        canary.stop_proxy(settings)
        processes.stop(settings)


def cli(settings: ServeSettings, *args: str) -> subprocess.CompletedProcess[str]:
    ports = [settings.inference.port, settings.management.port, settings.metrics.port, settings.model_metrics.port]
    return subprocess.run(
        [sys.executable, "-m", "servectl", *args, "--model", settings.model_name, "--run-dir", str(settings.run_dir),
         "--model-store", str(settings.model_store), "--ports", ",".join(map(str, ports))],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def recorded_is_real(settings: ServeSettings) -> None:
    """The run folder's record names the default TorchServe really has."""
    state = versions.State.load(settings)
    assert state is not None and state.default == Management(settings).default_version(), state


def test_a_rollback_undoes_only_the_version_it_names(races):
    """After the watcher rolled B back, an operator's 'make rollback' (VERSION=B) must not make
    B the default again: a compare-and-swap, not a toggle."""
    settings, a, b, _ = races
    lifecycle.rollout(settings, b)
    lifecycle.rollback(settings, b)  # what the watcher does on a breach
    assert Management(settings).default_version() == a
    refused = cli(settings, "rollback", b)  # the operator, a moment later
    assert refused.returncode == 1 and "refused" in refused.stderr, refused.stdout + refused.stderr
    assert Management(settings).default_version() == a
    recorded_is_real(settings)
    lifecycle.retire(settings, b)


def test_an_operation_waits_for_the_one_in_progress_then_sees_its_result(races):
    """A retire of B while B's rollout is in its pre-flight used to unload B under it; now it
    waits for the lock and then refuses, B being the default."""
    settings, a, b, _ = races
    assert b not in Management(settings).versions()  # so that its registration shows the rollout under way
    done: dict[str, object] = {}
    rollout = threading.Thread(target=lambda: done.setdefault("rollout", lifecycle.rollout(settings, b)))
    rollout.start()
    try:
        wait_for(lambda: b in Management(settings).versions() or not rollout.is_alive(), 60, f"{b} registered", 0.05)
        assert rollout.is_alive(), "the rollout finished before the race could start"
        with pytest.raises(ServeError, match="is the default"):
            lifecycle.retire(settings, b)
    finally:
        rollout.join(120)
    assert "rollout" in done, "the rollout failed"
    assert Management(settings).default_version() == b and b in Management(settings).versions()
    recorded_is_real(settings)
    lifecycle.rollback(settings, b)


def test_a_promote_during_a_canary_breach_leaves_a_true_record(races):
    """The watcher decided to abandon B's canary; the operator promoted B first. The watcher's
    rollback must see that under the lock and leave the promote (and a true record) alone."""
    settings, a, b, _ = races
    port = free_ports(1)[0]
    canary.start_canary(settings, b, 10, port=port)
    watched = watcher.begin(settings)  # the watcher's view: B is the canary
    canary.promote(settings)  # the operator, just before the watcher acts
    assert watcher.roll_back(settings, watched, "error_ratio: a breach seen before the promote") is None
    assert Management(settings).default_version() == b
    recorded_is_real(settings)
    state = versions.State.load(settings)
    assert state is not None and state.canary is None
    lifecycle.rollback(settings, b)
    recorded_is_real(settings)


def exporter_of(settings: ServeSettings) -> psutil.Process:
    """The model-metrics exporter process of this instance."""
    listen = f"{settings.model_metrics.host}:{settings.model_metrics.port}"
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(part.endswith("exporter.py") for part in cmdline) and listen in cmdline:
            return proc
    raise AssertionError(f"no exporter listening on {listen}")


def answer_load(url: str, rows: list[list[float]], stop: threading.Event) -> Counter[int]:
    """Valid requests on the default path, one at a time, until ``stop``: their statuses."""
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + 120
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            statuses[requests.post(url, json={"instances": rows}, timeout=ANSWER_TIMEOUT).status_code] += 1
        except requests.RequestException:
            statuses[0] += 1
    return statuses


@pytest.mark.parametrize("how, judged_by", [
    ("canary", "error_ratio"),  # worker deaths not counted: the split's log alone must see the 500s
    ("canary", "worker_deaths"),
    ("rollout", "worker_deaths"),  # no split: the deaths of its workers show it
])
def test_a_version_whose_workers_die_is_rolled_back(races, how, judged_by):
    """Its workers exit on every batch: TorchServe answers "Worker died." itself and restarts
    them. The handler never counts those 500s (the old watcher saw a clean version); the
    split's log and the worker deaths do."""
    settings, a, _, arm = races
    crash = f"{a}.crash"
    port = free_ports(1)[0]
    if how == "canary":
        canary.start_canary(settings, crash, 50, port=port)  # the pre-flight passes: not armed yet
        url = f"http://127.0.0.1:{port}/predictions/{settings.model_name}"
    else:
        lifecycle.rollout(settings, crash)
        url = f"{settings.inference.url}/predictions/{settings.model_name}"
    arm.write_text("")
    deaths = 10**6 if judged_by == "error_ratio" else 0
    config = settings.lifecycle.watch.model_copy(
        update={"window_seconds": 90, "interval_seconds": 0.5, "min_requests": 6, "max_worker_deaths": deaths})
    stop = threading.Event()
    got: dict[str, Counter[int]] = {}
    rows = [[0.5] * 10]
    load = threading.Thread(target=lambda: got.setdefault("s", answer_load(url, rows, stop)))
    load.start()
    try:
        reason = watcher.watch(settings, config)
    finally:
        stop.set()
        load.join()
        arm.unlink()
    print(reason, dict(got["s"]))
    assert (reason or "").startswith(judged_by), reason
    assert got["s"][500] > 0  # the client did see TorchServe's own 500s
    state = versions.State.load(settings)
    assert state is not None and state.canary is None and Management(settings).default_version() == a
    after = [requests.post(url, json={"instances": rows}, timeout=ANSWER_TIMEOUT).status_code for _ in range(20)]
    assert after == [200] * 20  # the default answers everything again
    lifecycle.retire(settings, crash)


def test_the_exporter_describes_the_workers_of_every_loaded_version(races):
    """A canary's dead workers must be visible: the worker series carry every loaded version,
    not only the default's."""
    settings, a, b, _ = races
    if b not in Management(settings).versions():
        lifecycle.load_version(settings, Management(settings), b, timeout=120)
    text = requests.get(f"{settings.model_metrics.url}/metrics", timeout=10).text
    ready = {s.labels["model_version"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
             if s.name == f"{PREFIX}_workers" and s.labels["status"] == "READY"}
    minimum = {s.labels["model_version"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == f"{PREFIX}_workers_min"}
    assert set(ready) == set(minimum) == {a, b} and ready == minimum, (ready, minimum)
    lifecycle.retire(settings, b)


def test_the_watcher_survives_failed_scrapes_and_a_sustained_failure_is_a_breach(races):
    """The exporter dies mid-watch: each failed tick is retried, and max_failed_ticks of them in
    a row roll the new version back (the old watcher ended at its first failed scrape). Last in
    this module: the instance has no exporter afterwards."""
    settings, a, b, _ = races
    lifecycle.rollout(settings, b)
    config = settings.lifecycle.watch.model_copy(update={"window_seconds": 60, "interval_seconds": 0.3, "max_failed_ticks": 4})
    watched = watcher.begin(settings)
    exporter_of(settings).kill()  # mid-watch: after its first scrape
    reason = watcher.follow(settings, watched, config)
    assert (reason or "").startswith("scrape"), reason
    assert Management(settings).default_version() == a
    recorded_is_real(settings)
