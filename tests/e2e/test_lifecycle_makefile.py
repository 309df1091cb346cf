"""The issue's sequence through the Makefile, in a copy of the repo (its artifacts/ and
model_store/ change): serve-bg, train SEED=7, archive VERSION=1.1, rollout, rollback, versions,
under the mixed load with no failed request; then stop and serve-bg keep the default."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np
import requests
import torch

from common.model_card import METADATA_FILE, ModelCard
from tests.conftest import ANSWER_TIMEOUT, PROBABILITY_ATOL
from tests.support.lifecycle import probabilities
from tests.support.loadmix import Mix, Report, run


def make(repo: Path, *args: str, timeout: float = 300) -> str:
    result = subprocess.run(["make", "-s", *args], cwd=repo, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"make {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def answered_by(port: int, name: str, rows: list[list[float]]) -> str:
    resp = requests.post(f"http://127.0.0.1:{port}/predictions/{name}", json={"instances": rows}, timeout=ANSWER_TIMEOUT)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["model_version"])


def test_train_archive_rollout_rollback_versions_restart_through_make(repo, built_card):
    copy, serve_args, ports = repo
    name = built_card.model_name
    x = torch.load(copy / "artifacts" / "test_split.pt", weights_only=True)["x"].numpy()
    rows = x[:2].tolist()
    first = ModelCard.load(copy / "artifacts" / METADATA_FILE).version
    expected = {first: probabilities(copy / "artifacts", x)}
    make(copy, "serve-bg", serve_args)
    make(copy, "train", "SEED=7", timeout=600)
    make(copy, "archive", "VERSION=1.1", timeout=600)
    assert (copy / "model_store" / f"{name}-1.1.mar").is_file() and (copy / "model_store" / f"{name}-{first}.mar").is_file()
    expected["1.1"] = probabilities(copy / "artifacts", x)
    assert not np.allclose(expected["1.1"], expected[first]), "a new seed must give other weights"

    stop, holder = threading.Event(), {}
    mix = Mix(x, list(built_card.feature_names))
    load = threading.Thread(target=lambda: holder.setdefault("r", run(
        f"http://127.0.0.1:{ports[0]}", name, mix, expected, list(built_card.class_names), 300, 4,
        timeout=ANSWER_TIMEOUT, stop=stop, atol=PROBABILITY_ATOL)), daemon=True)
    load.start()
    try:
        make(copy, "rollout", "VERSION=1.1", serve_args)
        assert answered_by(ports[0], name, rows) == "1.1"
        make(copy, "rollback", serve_args)
        assert answered_by(ports[0], name, rows) == first
    finally:
        stop.set()
        load.join()
    report: Report = holder["r"]
    assert report.results and report.server_errors == 0 and report.no_answer == 0, report.summary()
    assert not report.problems, [r.problem for r in report.problems[:5]]
    assert {r.version for r in report.results if r.status == 200} == {first, "1.1"}

    table = make(copy, "versions", serve_args)
    lines = {line.split()[0]: line.split() for line in table.splitlines()[1:] if line.strip()}
    assert lines[first][1:3] == ["*", "yes"] and lines["1.1"][1:3] == ["previous", "yes"], table

    # a version number never means two models: 1.1 again with other weights is refused
    make(copy, "train", "SEED=8", timeout=600)
    refused = subprocess.run(["make", "-s", "archive", "VERSION=1.1"], cwd=copy, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "FORCE=1" in refused.stderr, refused.stdout + refused.stderr

    # the default survives a restart (roll 1.1 out again first, so the default is not the start-up file's)
    make(copy, "rollout", "VERSION=1.1", serve_args)
    make(copy, "stop", serve_args)
    make(copy, "serve-bg", serve_args, "VERSION=1.1", "SEED=7")
    assert answered_by(ports[0], name, rows) == "1.1"
    table = make(copy, "versions", serve_args, "VERSION=1.1", "SEED=7")
    lines = {line.split()[0]: line.split() for line in table.splitlines()[1:] if line.strip()}
    assert lines["1.1"][1:3] == ["*", "yes"] and lines[first][1:3] == ["previous", "yes"], table
