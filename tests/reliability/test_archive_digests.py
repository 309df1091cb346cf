"""A tampered archive never reaches TorchServe: servectl checks each archive against the digest
``model.archive`` recorded outside the store (``servectl.store.digests``) before it starts or
registers it. The card's sha256 cannot do this: it lives in the same ``.mar`` and covers the
model file only, and the archive's handler code runs before the handler checks anything."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from servectl.config.settings import ServeSettings
from servectl.errors import ServeError
from servectl.instance import processes
from servectl.instance.management import Management
from servectl.store import digests
from tests.conftest import REPO, free_ports
from tests.reliability.conftest import repacked_mar

HANDLER = "tabular_handler.py"


def with_side_effect(src: Path, marker: Path) -> dict[str, bytes | None]:
    """The archive's own handler with one line added that proves it ran: a file written."""
    with zipfile.ZipFile(src) as mar:
        code = mar.read(HANDLER)
    return {HANDLER: code + f"\nopen({str(marker)!r}, 'w').write('ran')\n".encode()}


def start(store: Path, run_dir: Path, name: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servectl", "start", "--model", name, "--model-store", str(store),
         "--run-dir", str(run_dir), "--ports", ",".join(map(str, free_ports(3))), "--timeout", str(timeout)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout + 60,
    )


@pytest.mark.parametrize("recorded", [True, False], ids=["digest differs", "no digest"])
def test_servectl_start_refuses_a_tampered_archive_before_its_code_runs(built_card, tmp_path, recorded):
    """The genuine archive's digest recorded (then the file swapped), or none at all: refused
    with the reason, exit 1, no TorchServe started, the handler's line never ran."""
    src = REPO / "model_store" / f"{built_card.model_name}.mar"
    store, marker = tmp_path / "store", tmp_path / "handler-ran"
    if recorded:
        digests.copy(src, store)
    tampered = repacked_mar(src, store, with_side_effect(src, marker), record=False)
    run_dir = tmp_path / "run"
    proc = start(store, run_dir, built_card.model_name)
    try:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        why = "was changed after it was built" if recorded else "no digest recorded for it"
        assert proc.stderr.startswith(f"servectl: error: {tampered}: ") and why in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert not marker.exists(), "the tampered archive's handler ran"
    finally:
        processes.stop(ServeSettings.load(built_card.model_name, run_dir=run_dir))
    assert processes.running_pid(ServeSettings.load(built_card.model_name, run_dir=run_dir)) is None


def test_the_genuine_archive_copied_with_its_digest_starts(built_card, tmp_path):
    """The check passes what make archive built (and reported where the record lives)."""
    store = tmp_path / "store"
    digests.copy(REPO / "model_store" / f"{built_card.model_name}.mar", store)
    assert (tmp_path / "store.sha256").is_file()
    run_dir = tmp_path / "run"
    try:
        proc = start(store, run_dir, built_card.model_name, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        processes.stop(ServeSettings.load(built_card.model_name, run_dir=run_dir))


def test_registering_a_tampered_version_is_refused_before_torchserve_is_asked(built_card, tmp_path):
    """The lifecycle's registration (rollout, canary, restore) goes through Management.register:
    the check runs there, so not even a request reaches the management API (port 1 answers none)."""
    src = REPO / "model_store" / f"{built_card.model_name}-{built_card.version}.mar"
    store = tmp_path / "store"
    digests.copy(src, store)
    repacked_mar(src, store, with_side_effect(src, tmp_path / "ran"), record=False)
    settings = ServeSettings.load(built_card.model_name, model_store=store).with_ports(1, 1, 1)
    with pytest.raises(ServeError, match="was changed after it was built"):
        Management(settings).register(src.name, 1)
