"""The lifecycle's pure parts: the store layout and the run folder's record, the archive's
refusal to give a version number to another model, the watcher's thresholds, the canary split."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from model import archive, export
from servectl.config.lifecycle import Watch as WatchConfig
from servectl.config.settings import ServeSettings
from servectl.errors import ServeError
from servectl.release import canary, lifecycle
from servectl.release.watch_sources import deaths_between, split_answers
from servectl.release.watcher import Stats, Watch, breach, tick
from servectl.store import versions
from tests.conftest import free_ports


@pytest.fixture
def settings(tmp_path) -> ServeSettings:
    return replace(ServeSettings.load("tiny"), run_dir=tmp_path / "run", model_store=tmp_path / "store")


def test_versions_are_file_name_and_url_safe():
    assert versions.archive_name("m", "1.1") == "m-1.1.mar"
    for bad in ("../x", "a/b", "", ".hidden", "1..2", "x" * 65, "v 1"):
        with pytest.raises(ServeError):
            versions.check_version(bad)


def test_the_record_round_trips_and_names_the_start_up_archive(settings):
    assert versions.State.load(settings) is None
    assert versions.startup_archive(settings) == settings.mar  # nothing recorded: NAME.mar as before
    settings.run_dir.mkdir(parents=True)
    state = versions.State(default="1.1", loaded=["1.0", "1.1"], previous="1.0", canary=None)
    state.save(settings)
    assert versions.State.load(settings) == state
    assert versions.startup_archive(settings) == settings.mar  # the recorded default's archive is missing
    settings.model_store.mkdir()
    (settings.model_store / "tiny-1.1.mar").write_bytes(b"")
    assert versions.startup_archive(settings) == settings.model_store / "tiny-1.1.mar"
    (settings.run_dir / versions.STATE_FILE).write_text("{not json")
    with pytest.raises(ServeError, match="damaged"):
        versions.State.load(settings)


def test_an_archive_holds_its_card_and_test_split_and_a_version_never_means_two_models(tiny_artifacts, tmp_path):
    store = tmp_path / "store"
    mar = archive.archive(tiny_artifacts, store, build=tmp_path / "build")
    versioned = store / "tiny-0.1.mar"
    assert mar == store / "tiny.mar" and versioned.read_bytes() == mar.read_bytes()
    assert versions.card_of(versioned).version == "0.1"
    split = versions.test_split_of(versioned)
    assert torch.equal(split["x"], torch.load(tiny_artifacts / "test_split.pt", weights_only=True)["x"])
    # the same weights again (a new export: other TorchScript bytes) are the same model
    export.export("tiny", "0.1", tiny_artifacts)
    archive.archive(tiny_artifacts, store, build=tmp_path / "build")
    # other weights under the same version: refused, unless forced
    other = tmp_path / "other"
    shutil.copytree(tiny_artifacts, other)
    checkpoint = torch.load(other / "checkpoint.pt", weights_only=True)
    checkpoint["state_dict"]["out.bias"] += 1.0
    torch.save(checkpoint, other / "checkpoint.pt")
    export.export("tiny", "0.1", other)
    with pytest.raises(archive.VersionClash, match="FORCE=1"):
        archive.archive(other, store, build=tmp_path / "build")
    archive.archive(other, store, build=tmp_path / "build", force=True)
    assert versions.card_of(versioned).sha256 == versions.card_of(store / "tiny.mar").sha256


CONFIG = WatchConfig(auto=True, window_seconds=60, interval_seconds=1, min_requests=10, max_error_ratio=0.01, max_p99_ratio=3.0,
                     max_class_shift=0.2, max_failed_ticks=3, max_worker_deaths=0)


def stats(requests: float, errors: float = 0, p99_bucket: float = 0.01, classes: dict[str, float] | None = None) -> Stats:
    return Stats(requests, errors, {0.005: 0.0, p99_bucket: requests, float("inf"): requests}, classes or {"a": 50, "b": 50})


def test_the_watcher_judges_only_with_enough_answers_and_names_the_breach():
    old = stats(1000)
    assert breach(stats(5, errors=5), old, CONFIG) is None  # too few answers to judge
    assert breach(stats(100), old, CONFIG) is None
    assert (breach(stats(100, errors=2), old, CONFIG) or "").startswith("error_ratio")
    assert (breach(stats(100, p99_bucket=0.05), old, CONFIG) or "").startswith("p99")
    assert (breach(stats(100, classes={"a": 90, "b": 10}), old, CONFIG) or "").startswith("class_mix")
    assert breach(stats(100, classes={"a": 60, "b": 40}), old, CONFIG) is None  # a shift of 0.1
    assert stats(100).minus(stats(40)).requests == 60


def test_the_canary_split_rewrites_only_the_default_path(settings):
    assert canary.split_config(settings, None, 0).endswith("# no canary\n")
    snippet = canary.split_config(settings, "1.1", 10)
    assert "rewrite ^/predictions/tiny$ /predictions/tiny/1.1 break;" in snippet and "set $canary_split 1;" in snippet
    with pytest.raises(ServeError):
        canary.split_config(settings, "1.1; evil", 10)


def test_a_failed_tick_is_retried_and_a_sustained_failure_is_a_breach(settings):
    """Nothing answers on these ports (real refused connections): each tick fails, the watch
    goes on, and the max_failed_ticks-th failure in a row is a breach of its own."""
    gone = settings.with_ports(*free_ports(3), model_metrics=free_ports(1)[0])
    watched = Watch("1.1", "1.0", True, Stats())
    assert [tick(gone, watched, CONFIG) for _ in range(CONFIG.max_failed_ticks - 1)] == [(True, None)] * 2
    going, reason = tick(gone, watched, CONFIG)
    assert not going and (reason or "").startswith("scrape: no metrics for 3 ticks"), reason


def test_a_worker_whose_process_changed_or_went_away_died():
    assert deaths_between({"9000": 11, "9001": 12}, {"9000": 11, "9001": 12}) == 0
    assert deaths_between({"9000": 11, "9001": 12}, {"9000": 13, "9001": 12}) == 1  # restarted
    assert deaths_between({"9000": 11, "9001": 12}, {"9001": 12}) == 1  # gone, not yet back
    assert deaths_between({"9001": 12}, {"9000": 14, "9001": 12}) == 0  # back: counted when it went


def test_the_split_log_counts_only_the_split_answers_after_the_offset(settings):
    log = canary.proxy_dir(settings) / canary.SPLIT_LOG
    log.parent.mkdir(parents=True)
    old = '{"time":1.0,"status":500,"uri":"/predictions/tiny/1.1"}\n'
    lines = ['{"time":2.0,"status":200,"uri":"/predictions/tiny/1.1"}', '{"time":2.1,"status":500,"uri":"/predictions/tiny/1.1"}',
             '{"time":2.2,"status":502,"uri":"/predictions/tiny/1.1"}', '{"time":2.3,"status":500,"uri":"/predictions/tiny/1.2"}',
             '{"time":2.4,"status":4']  # the last one being written
    log.write_text(old + "\n".join(lines))
    seen = split_answers(settings, "1.1", len(old))
    assert (seen.requests, seen.errors) == (3, 2)


def test_a_watch_ends_when_its_server_stopped_or_restarted(settings):
    """'make stop' (or a restart) ends the watch: it must not count failed ticks and then roll
    back on the next instance the run folder starts."""
    gone = settings.with_ports(*free_ports(3), model_metrics=free_ports(1)[0])
    watched = Watch("1.1", "1.0", False, Stats(), server=2**22 + 1)  # not this run folder's TorchServe
    assert tick(gone, watched, CONFIG) == (False, None)
    assert watched.failed_ticks == 0


def test_servectl_progress_lines_follow_the_configured_format(settings, capsys):
    """serve_config/lifecycle.yaml log_format: text as shipped; json is one object per line."""
    assert settings.lifecycle.log_format == "text"
    lifecycle.say(settings, "loading 1.1")
    assert capsys.readouterr().out == "servectl: loading 1.1\n"
    as_json = replace(settings, lifecycle=settings.lifecycle.model_copy(update={"log_format": "json"}))
    lifecycle.say(as_json, "rolled back\nforged")
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["message"] == "rolled back\nforged" and json.loads(line)["logger"] == "servectl"
