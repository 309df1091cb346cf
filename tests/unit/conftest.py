"""The unit tier needs nothing but the venv: where a test wants the shipped model, it gets the
same model `make archive` builds (training is deterministic: same data, seed and epochs give
the same weights), trained and exported here into a temporary folder instead of artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common.model_card import METADATA_FILE, ModelCard


@pytest.fixture(scope="session")
def shipped_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make train` + `make archive`'s export step with the default settings (a few seconds)."""
    from model import data, export, train

    out = tmp_path_factory.mktemp("shipped_artifacts")
    config = train.TrainConfig()
    train.run(data.make_synthetic(seed=config.seed), config, out)
    export.export("tabular_classifier", "1.0", out)
    return out


@pytest.fixture(scope="session")
def built_card(shipped_artifacts: Path) -> ModelCard:
    return ModelCard.load(shipped_artifacts / METADATA_FILE)


@pytest.fixture(scope="session")
def test_split(shipped_artifacts: Path) -> dict[str, torch.Tensor]:
    split: dict[str, torch.Tensor] = torch.load(shipped_artifacts / "test_split.pt", weights_only=True)
    return split


@pytest.fixture(scope="session")
def built_model(shipped_artifacts: Path, built_card: ModelCard) -> torch.jit.ScriptModule:
    return torch.jit.load(str(shipped_artifacts / built_card.model_file)).eval()
