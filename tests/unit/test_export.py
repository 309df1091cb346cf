import json

import pytest
import torch

from common.model_card import METADATA_FILE, ModelCard, ModelCardError, sha256_of
from model import export, variants


def test_metadata_is_the_full_contract(tiny_artifacts):
    card = ModelCard.load(tiny_artifacts / METADATA_FILE)
    assert card.model_name == "tiny" and card.version == "0.1"
    assert card.feature_names == tuple(f"f{i}" for i in range(1, 11))
    assert len(card.normalisation["mean"]) == 10 and len(card.training_range["max"]) == 10
    assert card.sha256 == sha256_of(tiny_artifacts / card.model_file)
    assert card.torch_version == torch.__version__ and card.created_at
    assert "accuracy" in card.metrics["test"]
    assert card.variant == "torchscript" and card.runtime == "torchscript" and card.model_file == "model.pt"
    assert card.references[0] == "report.md" and all((tiny_artifacts / f).is_file() for f in card.references)


def test_scripted_file_matches_eager_to_1e6(tiny_artifacts):
    eager, _ = export.load_eager(tiny_artifacts)
    scripted = torch.jit.load(str(tiny_artifacts / export.MODEL_FILE))
    x = torch.load(tiny_artifacts / "test_split.pt", weights_only=True)["x"]
    assert variants.check_parity("torchscript", eager, scripted, x) <= 1e-6


def test_parity_failure_stops_the_export(tiny_artifacts):
    eager, _ = export.load_eager(tiny_artifacts)
    other, _ = export.load_eager(tiny_artifacts)
    with torch.no_grad():
        other.out.bias[0] += 1.0  # one class only: a shift of all logits keeps softmax
    x = torch.load(tiny_artifacts / "test_split.pt", weights_only=True)["x"]
    with pytest.raises(variants.GateError, match="variant torchscript: the parity gate failed"):
        variants.check_parity("torchscript", eager, torch.jit.script(other), x)


def test_tampered_model_file_is_refused(tiny_artifacts, tmp_path):
    card = ModelCard.load(tiny_artifacts / METADATA_FILE)
    tampered = tmp_path / "model.pt"
    tampered.write_bytes((tiny_artifacts / card.model_file).read_bytes() + b"x")
    with pytest.raises(ModelCardError, match="does not match the metadata"):
        card.verify_model_file(tampered)


def test_inconsistent_metadata_is_rejected(tiny_artifacts):
    data = json.loads((tiny_artifacts / METADATA_FILE).read_text())
    data["normalisation"]["mean"] = data["normalisation"]["mean"][:3]
    with pytest.raises(ModelCardError, match="one value per feature"):
        ModelCard.from_dict(data)
    del data["class_names"]
    with pytest.raises(ModelCardError, match="missing"):
        ModelCard.from_dict(data)
