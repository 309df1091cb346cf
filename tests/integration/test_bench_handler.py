"""``make bench-handler`` runs on the built archive and answers every batch it times (the
harness refuses to print a time for a batch whose requests were not all answered)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_the_handler_benchmark_times_every_batch_on_the_built_archive(built_card):
    out = subprocess.run([sys.executable, "-m", "benchmarks.handler_batches", "--rounds", "3"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    timed = [line for line in out.stdout.splitlines() if " median " in line]
    assert len(timed) == 7 and all(" p99 " in line for line in timed)
    assert any(line.startswith("6 x 1,000-row .npy") for line in timed)
    assert any(line.startswith("1 x 1 row JSON, 2 ms idle before each") for line in timed)
