"""The deployment make targets without an engine: the KServe layout is produced from the built
.mar (compose and make image without an engine: tests/container/test_build_faults.py)."""

from __future__ import annotations

import subprocess

from tests.deploy.conftest import REPO


def test_kserve_layout_target_writes_the_layout_kserve_expects(built_card):
    mar = f"model_store/{built_card.model_name}.mar"  # -o: use the built one, never rebuild it mid-session
    out = subprocess.run(["make", "-s", "-o", mar, "kserve-layout"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    layout = REPO / "build" / "kserve"
    assert (layout / "config" / "config.properties").is_file()
    assert [p.name for p in (layout / "model-store").iterdir()] == [f"{built_card.model_name}.mar"]
