"""The deployment make targets: compose refuses clearly without a Docker engine, the KServe
layout is produced from the built .mar."""

from __future__ import annotations

import os
import subprocess

from tests.deploy.conftest import REPO


def test_compose_targets_fail_fast_and_clearly_without_a_docker_engine(tmp_path):
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")  # an engine that is not there
    for target in ("compose-up", "compose-down"):
        out = subprocess.run(["make", "-s", target], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode != 0
        assert "no Docker engine reachable" in out.stderr, out.stderr


def test_kserve_layout_target_writes_the_layout_kserve_expects(built_card):
    mar = f"model_store/{built_card.model_name}.mar"  # -o: use the built one, never rebuild it mid-session
    out = subprocess.run(["make", "-s", "-o", mar, "kserve-layout"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    layout = REPO / "build" / "kserve"
    assert (layout / "config" / "config.properties").is_file()
    assert [p.name for p in (layout / "model-store").iterdir()] == [f"{built_card.model_name}.mar"]
