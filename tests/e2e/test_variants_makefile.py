"""The README's variant path through the Makefile, in one copy of the repo: after the default
build, ``make archive VARIANT=int8``, ``onnx``, ``export`` and back to ``torchscript`` (all
version 1.0: one training), each served by ``make serve-bg`` and answering the README's curl
with the variant the model card names; then another training under the same version is
refused. Sequential, one server at a time."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import requests

from common.model_card import VARIANTS
from tests.conftest import ANSWER_TIMEOUT, SHIPPED
from tests.e2e.test_makefile import readme_curl

ORDER = [*(v for v in VARIANTS if v != "torchscript"), "torchscript"]  # and back to the default


def make(where: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", *args], cwd=where, capture_output=True, text=True, timeout=timeout)


def readme_answer(where: Path, port: int) -> dict:
    command = readme_curl().replace(SHIPPED.inference.url, f"http://127.0.0.1:{port}")
    out = subprocess.run(["bash", "-c", command + " -w '\\n%{http_code}'"], cwd=where, capture_output=True,
                         text=True, timeout=ANSWER_TIMEOUT)
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "200", out.stdout + out.stderr
    return json.loads(body)


def test_every_variant_archives_and_serves_under_the_same_version_and_back(repo, built_card):
    copy, serve_args, ports = repo
    took = {}
    for variant in ORDER:
        started = time.monotonic()
        built = make(copy, "archive", f"VARIANT={variant}")
        assert built.returncode == 0, f"make archive VARIANT={variant}:\n{built.stdout}\n{built.stderr}"
        served = make(copy, "serve-bg", serve_args)
        assert served.returncode == 0, f"make serve-bg ({variant}):\n{served.stdout}\n{served.stderr}"
        try:
            assert f"{built_card.model_name} {built_card.version} is READY" in served.stdout
            card = requests.get(f"http://127.0.0.1:{ports[1]}/models/{built_card.model_name}",
                                params={"customized": "true"}, timeout=30).json()[0]["customizedMetadata"]
            card = json.loads(card) if isinstance(card, str) else card
            assert (card["variant"], card["version"]) == (variant, built_card.version)
            answer = readme_answer(copy, ports[0])
            assert answer["model_version"] == built_card.version
            for row in answer["predictions"]:
                assert set(row["probabilities"]) == set(built_card.class_names)
        finally:
            assert make(copy, "stop", serve_args, timeout=120).returncode == 0
        took[variant] = round(time.monotonic() - started, 1)
    print("archive + serve-bg + curl + stop, seconds:", took)
    # the sticky VARIANT is back to the default: a plain make archive has nothing to do
    assert make(copy, "archive").stdout == ""


def test_another_training_under_a_used_version_is_still_refused(repo, built_card):
    copy, _, _ = repo
    assert make(copy, "train", "SEED=7").returncode == 0
    refused = make(copy, "archive")
    assert refused.returncode != 0
    assert f"already holds version {built_card.version} of another training" in refused.stderr
    assert "choose another VERSION, or FORCE=1" in refused.stderr
