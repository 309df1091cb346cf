"""The start banner (``servectl start``/``serve``) never prints a secret: with token auth on it
shows how to read the key, not the key."""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import replace

from servectl.__main__ import banner
from servectl.config.settings import ServeSettings
from tests.conftest import REPO

KEYS = {"management": {"key": "mgmt-SECRET-1", "expiration time": "x"},
        "inference": {"key": "infer-SECRET-2", "expiration time": "x"}, "API": {"key": "api-SECRET-3"}}
STATUS = {"modelVersion": "1.0", "minWorkers": 1, "workers": [{"status": "READY"}]}


def guarded(tmp_path) -> ServeSettings:
    settings = replace(ServeSettings.load("m"), run_dir=tmp_path / "run")
    settings = settings.with_properties(disable_token_authorization="false")
    settings.run_dir.mkdir()
    settings.key_file.write_text(json.dumps(KEYS))
    return settings


def test_the_banner_prints_no_key_but_the_command_that_reads_it(tmp_path):
    text = banner(guarded(tmp_path), STATUS)
    assert "SECRET" not in text, text
    command = next(line for line in text.splitlines() if "Authorization" in line)
    assert f"-m servectl token --run-dir {shlex.quote(str(tmp_path / 'run'))}" in command
    # the command substitution it shows reads the inference key (run as the banner says)
    inner = command.split('Bearer $(', 1)[1].split(')"', 1)[0]
    out = subprocess.run(shlex.split(inner), cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "infer-SECRET-2"


def test_without_token_auth_the_banner_has_no_authorization_header(tmp_path):
    settings = replace(ServeSettings.load("m"), run_dir=tmp_path / "run")
    assert "Authorization" not in banner(settings, STATUS)
