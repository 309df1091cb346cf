"""Shared fixtures. Each test folder is one tier; its marker is applied here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from handlers.model_card import METADATA_FILE, ModelCard
from servectl.settings import free_loopback_ports as free_ports  # noqa: F401 (tests import it from here)

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"
TIERS = {"unit": "unit", "integration": "integration", "e2e": "e2e", "deploy": "deploy", "reliability": "reliability"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, TIERS[tier]))


@pytest.fixture(scope="session")
def built_card() -> ModelCard:
    """The metadata of the model `make archive` built: the one source of names."""
    path = ARTIFACTS / METADATA_FILE
    if not path.is_file():
        pytest.fail(f"{path} is missing: run the tests through 'make test' (it builds the model)")
    return ModelCard.load(path)


@pytest.fixture(scope="session")
def test_split() -> dict[str, torch.Tensor]:
    return torch.load(ARTIFACTS / "test_split.pt", weights_only=True)


@pytest.fixture(scope="session")
def built_model(built_card: ModelCard) -> torch.jit.ScriptModule:
    return torch.jit.load(str(ARTIFACTS / built_card.model_file)).eval()


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model trained for a few epochs on a small synthetic set, then exported."""
    from model import data, export, train

    out = tmp_path_factory.mktemp("tiny_artifacts")
    config = train.TrainConfig(epochs=3, min_accuracy=0.0)
    train.run(data.make_synthetic(n_rows=300, seed=7), config, out)
    export.export("tiny", "0.1", out)
    return out
