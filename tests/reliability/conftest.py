"""Reliability tests start their OWN TorchServe instances (free loopback ports, a temp run
dir, always stopped): they kill workers, scale them to zero and flood them, which must
never touch the shared ``live`` server of the integration tier."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from servectl.config.settings import ServeSettings
from servectl.instance import launch, processes, readiness
from servectl.store import digests
from tests.conftest import free_ports
from tests.integration.conftest import frontend_metric, workers
from tests.support.loadmix import Mix

__all__ = ["frontend_metric", "own_server", "repacked_mar", "workers"]


@contextmanager
def own_server(
    name: str, run_dir: Path, model_store: Path | None = None, timeout: float = 120, **props: str
) -> Iterator[ServeSettings]:
    """A TorchServe of this test alone; ``props`` override config.properties keys."""
    settings = ServeSettings.load(name, run_dir=run_dir).with_ports(*free_ports(3)).with_properties(**props)
    if model_store is not None:
        settings = replace(settings, model_store=model_store)
    with open(run_dir / "torchserve.out", "ab") as out:
        proc = launch.start(settings, stdout=out)
    try:
        readiness.wait_ready(settings, timeout=timeout, alive=lambda: proc.poll() is None)
        yield settings
    finally:
        processes.stop(settings)


def repacked_mar(src: Path, store: Path, change: dict[str, bytes | None], record: bool = True) -> Path:
    """A copy of the .mar in ``store`` with some members replaced (bytes) or kept (None).
    ``record``: the test acts as the builder and records its digest (servectl.store.digests), so
    servectl serves it and what is tested is the handler's own checks; False: a tampered file."""
    store.mkdir(parents=True, exist_ok=True)
    dst = store / src.name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = change.get(item.filename)
            zout.writestr(item, data if data is not None else zin.read(item.filename))
    if record:
        digests.record(store, [dst])
    return dst


@pytest.fixture(scope="session")
def steady(built_card, tmp_path_factory) -> Iterator[ServeSettings]:
    """One default-config instance for the non-destructive checks (security, load, fuzz)."""
    with own_server(built_card.model_name, tmp_path_factory.mktemp("steady")) as settings:
        yield settings


@pytest.fixture(scope="session")
def reference(built_model, test_split) -> tuple[np.ndarray, np.ndarray]:
    """The test rows and the in-process model's probabilities for them."""
    with torch.inference_mode():
        probs = torch.softmax(built_model(test_split["x"]), 1).double().numpy()
    return test_split["x"].numpy(), probs


@pytest.fixture(scope="session")
def mix(reference, built_card) -> Mix:
    return Mix(reference[0], list(built_card.feature_names))


def copy_store(src_store: Path, dst: Path) -> Path:
    """The store's archives, each checked and copied with its recorded digest."""
    dst.mkdir(parents=True, exist_ok=True)
    for mar in src_store.glob("*.mar"):
        digests.copy(mar, dst)
    return dst
