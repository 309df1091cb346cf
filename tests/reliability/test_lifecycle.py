"""The model lifecycle on a real instance of its own: a candidate (another seed) rolled out,
rolled back and retired under the mixed load with no failed request, the default surviving a
restart, and the refusals (a tampered archive, other class names, a version outside the store)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from prometheus_client.parser import text_string_to_metric_families

from client.api import Client, ClientConfig
from common.metric_names import PREFIX
from common.model_card import METADATA_FILE, ModelCard
from model import archive, export
from servectl.config.settings import Endpoint, ServeSettings
from servectl.errors import ServeError
from servectl.instance import processes, readiness
from servectl.instance.management import Management
from servectl.release import canary, lifecycle
from servectl.release.watcher import watch
from servectl.store import digests, versions
from tests.conftest import PROBABILITY_ATOL, REPO, free_ports
from tests.reliability.conftest import repacked_mar
from tests.support.lifecycle import StepReport, lifecycle_server, probabilities, under_load
from tests.support.loadmix import Mix

SETTLE = 1.5  # seconds of load before and after each step
CANARY_PERCENT = 30.0
CANARY_SECONDS = 3.0


@pytest.fixture(scope="module")
def life(tmp_path_factory) -> Iterator[tuple[ServeSettings, dict[str, np.ndarray], str, str]]:
    with lifecycle_server(tmp_path_factory.mktemp("lifecycle")) as served:
        yield served


def step(life, mix: Mix, built_card, name: str, action, base_url: str | None = None, settle: float = SETTLE) -> StepReport:
    settings, expected, _, _ = life
    result = under_load(settings, mix, expected, list(built_card.class_names), name, action, settle=settle,
                        base_url=base_url)
    summary = result.summary()
    print(json.dumps(summary))
    assert result.report.server_errors == 0 and result.report.no_answer == 0, summary
    assert not result.report.problems, [r.problem for r in result.report.problems[:5]]
    assert result.in_flight, f"{name}: no request was in flight while the step ran"
    return result


def answering_version(settings: ServeSettings, rows: list[list[float]]) -> str:
    resp = requests.post(f"{settings.inference.url}/predictions/{settings.model_name}", json={"instances": rows}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Model-Version"] == resp.json()["model_version"]
    return resp.headers["X-Model-Version"]


def test_rollout_under_load_switches_the_default_with_no_failed_request(life, mix, built_card, reference):
    settings, _, old, new = life
    result = step(life, mix, built_card, f"rollout {new}", lambda: lifecycle.rollout(settings, new))
    assert {old, new} <= set(result.summary()["by_version"])  # the load saw both, each answer right for its own
    assert answering_version(settings, reference[0][:2].tolist()) == new
    state = versions.State.load(settings)
    assert state is not None and (state.default, state.previous, sorted(state.loaded)) == (new, old, sorted([old, new]))


def test_the_client_lists_the_versions_and_pins_a_request_to_one(life, reference, built_card):
    settings, expected, old, new = life
    config = ClientConfig(inference_url=settings.inference.url, management_url=settings.management.url,
                          model=settings.model_name)
    listed = {v["version"]: v for v in Client(config).versions()}
    assert set(listed) == {old, new} and listed[new]["default"] and not listed[old]["default"]
    pinned = Client(replace(config, version=old)).predict(reference[0][:3].tolist())
    assert pinned.model_version == old
    got = [[row.probabilities[c] for c in built_card.class_names] for row in pinned.rows]
    np.testing.assert_allclose(got, expected[old][:3], atol=PROBABILITY_ATOL)


def test_the_default_and_the_loaded_versions_survive_a_restart(life, reference):
    settings, _, old, new = life
    processes.stop(settings)
    ports = [settings.inference.port, settings.management.port, settings.metrics.port, settings.model_metrics.port]
    subprocess.run(
        [sys.executable, "-m", "servectl", "start", "--model", settings.model_name, "--run-dir", str(settings.run_dir),
         "--model-store", str(settings.model_store), "--ports", ",".join(map(str, ports))],
        cwd=REPO, check=True, timeout=300,
    )
    loaded = Management(settings).versions()
    assert set(loaded) == {old, new} and all(readiness.ready_workers(d) >= 1 for d in loaded.values())
    assert Management(settings).default_version() == new
    assert answering_version(settings, reference[0][:2].tolist()) == new


def test_rollback_under_load_restores_the_previous_default_at_once(life, mix, built_card, reference):
    settings, _, old, new = life
    result = step(life, mix, built_card, "rollback", lambda: lifecycle.rollback(settings, new))
    assert result.seconds < 5  # one set-default call, not a reload (a bound on a hang, not a speed claim)
    assert answering_version(settings, reference[0][:2].tolist()) == old


def test_retire_under_load_unloads_the_version_once_drained(life, mix, built_card):
    settings, _, old, new = life
    with pytest.raises(ServeError, match="is the default"):
        lifecycle.retire(settings, old)
    step(life, mix, built_card, f"retire {new}", lambda: lifecycle.retire(settings, new))
    assert set(Management(settings).versions()) == {old}
    row = next(line for line in lifecycle.table(settings).splitlines() if line.startswith(new + " "))
    assert row.split()[1:3] == ["no", "-"], row  # still built, no longer loaded, no role


@pytest.fixture(scope="module")
def proxy_port(life) -> Iterator[int]:
    """The canary proxy in front of the instance, with no split yet: the clients' way in."""
    settings = life[0]
    port = free_ports(1)[0]
    canary.apply(settings, None, 0, port)
    yield port
    canary.stop_proxy(settings)


def test_canary_splits_the_default_path_by_its_percent_under_load(life, mix, built_card, proxy_port):
    settings, _, old, new = life
    url = f"http://127.0.0.1:{proxy_port}"
    result = step(life, mix, built_card, "canary", lambda: canary.start_canary(settings, new, CANARY_PERCENT, port=proxy_port),
                  base_url=url, settle=CANARY_SECONDS)
    split = [r.version for r in result.after if r.status == 200 and r.case.path == "predict"]
    share = split.count(new) / len(split)
    # binomial: 5 standard deviations of the share for this many answers
    bound = 5 * (CANARY_PERCENT / 100 * (1 - CANARY_PERCENT / 100) / len(split)) ** 0.5
    assert abs(share - CANARY_PERCENT / 100) <= bound, (share, len(split))
    assert answering_version(settings, [[0.0] * len(built_card.feature_names)]) == old  # the inference port: no split
    row = next(line for line in lifecycle.table(settings).splitlines() if line.startswith(new + " "))
    assert f"canary:{CANARY_PERCENT:g}%" in row


def test_promote_under_load_makes_the_canary_the_default(life, mix, built_card, proxy_port):
    settings, _, old, new = life
    url = f"http://127.0.0.1:{proxy_port}"
    step(life, mix, built_card, "promote", lambda: canary.promote(settings), base_url=url)
    assert Management(settings).default_version() == new
    state = versions.State.load(settings)
    assert state is not None and (state.default, state.previous, state.canary) == (new, old, None)
    result = step(life, mix, built_card, "rollback", lambda: lifecycle.rollback(settings, new), base_url=url)
    assert set(result.summary()["by_version"]) == {old, new}


def test_rollback_abandons_a_canary_under_load(life, mix, built_card, proxy_port):
    settings, _, old, new = life
    url = f"http://127.0.0.1:{proxy_port}"
    canary.start_canary(settings, new, CANARY_PERCENT, port=proxy_port)
    step(life, mix, built_card, "abandon canary", lambda: canary.abandon(settings, new), base_url=url)
    via_proxy = replace(settings, inference=Endpoint("127.0.0.1", proxy_port))
    after = [answering_version(via_proxy, [[0.0] * len(built_card.feature_names)]) for _ in range(20)]
    assert set(after) == {old}
    lifecycle.retire(settings, new)


def bad_candidate(settings: ServeSettings, work: Path, good: Path, version: str) -> None:
    """A deliberately bad version: the good candidate with its output classes rotated, so it
    predicts another class mix (its card keeps the good accuracy: the pre-flight refuses it)."""
    shutil.copytree(good, work)
    checkpoint = torch.load(work / "checkpoint.pt", weights_only=True)
    for key in ("out.weight", "out.bias"):
        checkpoint["state_dict"][key] = checkpoint["state_dict"][key].roll(1, dims=0)
    torch.save(checkpoint, work / "checkpoint.pt")
    report = json.loads((work / "report.json").read_text())
    report["config"]["min_accuracy"] = 0.0  # export's accuracy gate would stop this deliberate mistake
    (work / "report.json").write_text(json.dumps(report))
    card = export.export(settings.model_name, version, work)
    good_metrics = ModelCard.load(good / METADATA_FILE).metrics  # the accuracy it claims, and misses
    ModelCard.from_dict({**card.to_dict(), "metrics": good_metrics}).save(work / METADATA_FILE)
    archive.archive(work, settings.model_store, build=work / "build", latest=False)


def test_the_watcher_rolls_a_bad_canary_back_under_load_and_says_why(life, mix, built_card, proxy_port, tmp_path):
    settings, expected, old, new = life
    bad = f"{new}bad"
    bad_candidate(settings, tmp_path / "bad", settings.model_store.parent / "candidate", bad)
    expected[bad] = probabilities(tmp_path / "bad", mix.x)
    with pytest.raises(ServeError, match="below the card"):
        canary.start_canary(settings, bad, 50, port=proxy_port)
    canary.start_canary(settings, bad, 50, port=proxy_port, force=True)
    config = settings.lifecycle.watch.model_copy(update={"window_seconds": 60, "interval_seconds": 0.5, "min_requests": 20})
    why: dict[str, str | None] = {}
    step(life, mix, built_card, "auto-rollback", lambda: why.setdefault("reason", watch(settings, config)),
         base_url=f"http://127.0.0.1:{proxy_port}")
    assert (why["reason"] or "").startswith("class_mix"), why
    state = versions.State.load(settings)
    assert state is not None and state.canary is None and state.default == old
    metrics = requests.get(f"{settings.model_metrics.url}/metrics", timeout=10).text
    samples = [s for f in text_string_to_metric_families(metrics) for s in f.samples
               if s.name == f"{PREFIX}_auto_rollbacks_total"]
    assert [(s.labels["model_version"], s.labels["kind"], s.value) for s in samples] == [(bad, "class_mix", 1.0)]
    lifecycle.retire(settings, bad)


def store_variant(settings, source_version: str, new_version: str, **card_changes) -> None:
    """A copy of ``source_version``'s archive in the store as ``new_version``, its card changed."""
    src = versions.archive_of(settings, source_version)
    card = {**json.loads(zipfile.ZipFile(src).read("metadata.json")), "version": new_version, **card_changes}
    manifest = json.loads(zipfile.ZipFile(src).read("MAR-INF/MANIFEST.json"))
    manifest["model"]["modelVersion"] = new_version
    tmp = repacked_mar(src, settings.run_dir / f"repack-{new_version}", {
        "metadata.json": json.dumps(card).encode(), "MAR-INF/MANIFEST.json": json.dumps(manifest).encode()})
    target = settings.model_store / versions.archive_name(settings.model_name, new_version)
    tmp.rename(target)
    digests.record(settings.model_store, [target])  # built on purpose: recorded, as model.archive does


def test_a_tampered_archive_is_refused_and_unloaded_again(life):
    settings, _, old, new = life
    tampered_version = f"{new}t"
    store_variant(settings, new, tampered_version, sha256="0" * 64)
    with pytest.raises(ServeError, match="refused to load.*sha256"):
        lifecycle.rollout(settings, tampered_version, timeout=120)
    assert set(Management(settings).versions()) == {old}
    assert Management(settings).default_version() == old


def test_other_class_names_refuse_the_rollout_unless_forced(life):
    settings, _, old, new = life
    renamed = f"{new}r"
    class_names = [c.upper() for c in json.loads(zipfile.ZipFile(versions.archive_of(settings, new)).read("metadata.json"))["class_names"]]
    store_variant(settings, new, renamed, class_names=class_names)
    with pytest.raises(ServeError, match="class names differ"):
        lifecycle.rollout(settings, renamed)
    assert set(Management(settings).versions()) == {old}  # the refused candidate was unloaded


def test_registration_outside_the_store_is_refused_on_a_lifecycle_instance(life, tmp_path):
    settings, _, old, _ = life
    outside = tmp_path / "model_store" / "x.mar"  # even a folder named model_store elsewhere
    outside.parent.mkdir()
    outside.write_bytes(versions.archive_of(settings, old).read_bytes())
    for url in ("http://127.0.0.1:1/x.mar", f"file://{outside}", str(outside), "../x.mar", "file:///etc/passwd"):
        resp = requests.post(f"{settings.management.url}/models", params={"url": url, "model_name": "intruder"}, timeout=10)
        assert resp.status_code == 404 and resp.json()["type"] == "ModelNotFoundException", (url, resp.text)
    with pytest.raises(ServeError, match="version"):
        lifecycle.rollout(settings, "../../etc")
    assert set(Management(settings).versions()) == {old}


def test_at_most_max_loaded_versions_stay_loaded(life):
    """A rollout that would load one too many first retires a spare version (neither default
    nor previous); with no spare it refuses and loads nothing."""
    shipped, _, old, new = life
    bad = f"{new}bad"  # built by the watcher's test, still in the store
    settings = replace(shipped, lifecycle=shipped.lifecycle.model_copy(update={"max_loaded_versions": 2}))
    api = Management(settings)
    lifecycle.load_version(settings, api, new, timeout=120)  # loaded, not the previous default: a spare
    state = lifecycle.current_state(settings, api)
    assert (state.default, state.previous, set(state.loaded)) == (old, None, {old, new})
    lifecycle.rollout(settings, bad, force=True)  # retires the spare first
    state = lifecycle.current_state(settings, api)
    assert (state.default, state.previous, set(state.loaded)) == (bad, old, {old, bad})
    with pytest.raises(ServeError, match="max_loaded_versions is 2"):
        lifecycle.rollout(settings, new)  # default and previous are no spares
    assert set(Management(settings).versions()) == {old, bad}
    lifecycle.rollback(settings, bad)
    lifecycle.retire(settings, bad)
    assert set(Management(settings).versions()) == {old}
