"""Script the trained model, prove it matches eager mode, and write the metadata JSON.

python -m model.export --name tabular_classifier --version 1.0
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from handlers.model_card import METADATA_FILE, ModelCard, sha256_of
from model.network import TabularMLP
from model.train import ARTIFACTS

MODEL_FILE = "model.pt"
PARITY_TOLERANCE = 1e-6
EXAMPLE_REQUEST = "example-request.json"


class ParityError(RuntimeError):
    """Scripted and eager probabilities differ by more than the tolerance."""


def load_eager(artifacts: Path = ARTIFACTS) -> tuple[TabularMLP, dict[str, Any]]:
    checkpoint = torch.load(artifacts / "checkpoint.pt", weights_only=True)
    model = TabularMLP(len(checkpoint["feature_names"]), len(checkpoint["class_names"]), checkpoint["hidden"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


def check_parity(eager: torch.nn.Module, scripted: torch.nn.Module, x: torch.Tensor) -> float:
    """Largest absolute difference of class probabilities; raise over the tolerance."""
    with torch.inference_mode():
        diff = (torch.softmax(eager(x), 1) - torch.softmax(scripted(x), 1)).abs().max().item()
    if diff > PARITY_TOLERANCE:
        raise ParityError(f"scripted vs eager probabilities differ by {diff:.3g} > {PARITY_TOLERANCE}")
    return diff


def export(name: str, version: str, artifacts: Path = ARTIFACTS) -> ModelCard:
    eager, checkpoint = load_eager(artifacts)
    scripted = torch.jit.script(eager)
    model_path = artifacts / MODEL_FILE
    scripted.save(str(model_path))
    test = torch.load(artifacts / "test_split.pt", weights_only=True)
    # parity is checked on the file as the server will load it, not the in-memory module
    check_parity(eager, torch.jit.load(str(model_path)), test["x"])
    report = json.loads((artifacts / "report.json").read_text())
    card = ModelCard(
        model_name=name,
        version=version,
        feature_names=tuple(checkpoint["feature_names"]),
        class_names=tuple(checkpoint["class_names"]),
        normalisation={"mean": eager.mean.tolist(), "std": eager.std.tolist()},
        training_range={"min": checkpoint["train_min"], "max": checkpoint["train_max"]},
        metrics={"test": report["test"], "validation_accuracy": report["validation"]["accuracy"]},
        torch_version=torch.__version__,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        model_file=MODEL_FILE,
        sha256=sha256_of(model_path),
        extra={"data": report["data"]},
    )
    card.save(artifacts / METADATA_FILE)
    # two real rows for the README's curl example, whatever data the model was trained on
    example = {"instances": test["x"][:2].tolist()}
    (artifacts / EXAMPLE_REQUEST).write_text(json.dumps(example) + "\n")
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--artifacts", type=Path, default=ARTIFACTS)
    args = parser.parse_args(argv)
    try:
        card = export(args.name, args.version, args.artifacts)
    except ParityError as exc:
        print(f"export: error: {exc}", file=sys.stderr)
        return 1
    print(f"scripted {card.model_file} (sha256 {card.sha256[:12]}...), parity ok; wrote {METADATA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
