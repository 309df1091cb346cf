"""Save the trained model as one variant, pass its gates, and write the metadata JSON (the card).

python -m model.export --name tabular_classifier --version 1.0 [--variant torchscript|int8|onnx|export]

Gates (model.variants): parity with the eager model on the test split within the variant's
tolerance, and the accuracy gate (the training run's --min-accuracy) on the variant's own
predictions. The card records the variant, its runtime, the file's sha256 and the training
report's files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from common.model_card import DEFAULT_VARIANT, METADATA_FILE, VARIANTS, ModelCard, sha256_of
from model import variants
from model.data import Dataset
from model.network import TabularMLP
from model.train import ARTIFACTS, REPORT_FILES, evaluate

MODEL_FILE = VARIANTS[DEFAULT_VARIANT].model_file
EXAMPLE_REQUEST = "example-request.json"


def load_eager(artifacts: Path = ARTIFACTS) -> tuple[TabularMLP, dict[str, Any]]:
    checkpoint = torch.load(artifacts / "checkpoint.pt", weights_only=True)
    model = TabularMLP(len(checkpoint["feature_names"]), len(checkpoint["class_names"]), checkpoint["hidden"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


def training_fingerprint(checkpoint: dict[str, Any]) -> str:
    """sha256 of what one training produced, whatever variant is built from it: each weight
    tensor (name, dtype, shape, bytes, in name order) and the checkpoint's other fields (names,
    scaling, training statistics). ``model.archive`` compares it to decide whether a version
    number already means this model; file bytes cannot say (TorchScript's change every export)."""
    digest = hashlib.sha256()
    state = checkpoint["state_dict"]
    for key in sorted(state):
        tensor = state[key].detach().contiguous().cpu()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        digest.update(tensor.numpy().tobytes())
    facts = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    digest.update(json.dumps(facts, sort_keys=True).encode())
    return digest.hexdigest()


def export(name: str, version: str, artifacts: Path = ARTIFACTS, variant: str = DEFAULT_VARIANT) -> ModelCard:
    eager, checkpoint = load_eager(artifacts)
    test = torch.load(artifacts / "test_split.pt", weights_only=True)
    report = json.loads((artifacts / "report.json").read_text())
    model_path = variants.build(variant, eager, test["x"][:2], artifacts)
    loaded = variants.load(variant, model_path)
    variants.check_parity(variant, eager, loaded, test["x"])
    data = Dataset(test["x"], test["y"], tuple(checkpoint["feature_names"]), tuple(checkpoint["class_names"]))
    metrics = evaluate(loaded, data)
    variants.check_accuracy(variant, metrics["accuracy"], report["config"]["min_accuracy"])
    card = ModelCard(
        model_name=name,
        version=version,
        feature_names=tuple(checkpoint["feature_names"]),
        class_names=tuple(checkpoint["class_names"]),
        # the training split's statistics (the explanations' baseline), whatever scaling the network uses
        normalisation={"mean": checkpoint["train_mean"], "std": checkpoint["train_std"]},
        training_range={"min": checkpoint["train_min"], "max": checkpoint["train_max"]},
        metrics={"test": metrics, "validation_accuracy": report["validation"]["accuracy"]},
        torch_version=torch.__version__,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        model_file=model_path.name,
        sha256=sha256_of(model_path),
        extra={
            "data": report["data"],
            "scaling": report["config"].get("scaling", "standard"),
            "training_sha256": training_fingerprint(checkpoint),
        },
        variant=variant,
        runtime=VARIANTS[variant].runtime,
        references=tuple(f for f in REPORT_FILES if (artifacts / f).is_file()),
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
    parser.add_argument("--variant", default=DEFAULT_VARIANT, choices=sorted(VARIANTS))
    args = parser.parse_args(argv)
    try:
        card = export(args.name, args.version, args.artifacts, args.variant)
    except variants.GateError as exc:
        print(f"export: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{card.variant} variant: {card.model_file} ({card.runtime}, sha256 {card.sha256[:12]}...), "
        f"parity and accuracy gates passed; wrote {METADATA_FILE}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
