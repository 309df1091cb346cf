"""Train the example classifier and write the checkpoint, the test split and the report.

python -m model.train [--data rows.csv --target label] [--min-accuracy 0.9]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.data import DataError, Dataset, Splits, load_csv, make_synthetic, split
from model.network import TabularMLP

ARTIFACTS = Path("artifacts")


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    hidden: int = 32
    min_accuracy: float = 0.90


class AccuracyGateError(RuntimeError):
    """Test accuracy is under the configured gate."""


def evaluate(model: nn.Module, data: Dataset) -> dict[str, Any]:
    """Accuracy, macro and per-class precision/recall/F1, and the confusion matrix."""
    model.eval()
    with torch.inference_mode():
        predicted = model(data.x).argmax(dim=1)
    n_classes = len(data.class_names)
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
    confusion.index_put_((data.y, predicted), torch.ones_like(data.y), accumulate=True)
    per_class = {}
    for i, name in enumerate(data.class_names):
        tp = int(confusion[i, i])
        predicted_i = int(confusion[:, i].sum())
        actual_i = int(confusion[i, :].sum())
        precision = tp / predicted_i if predicted_i else 0.0
        recall = tp / actual_i if actual_i else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": actual_i,
        }
    return {
        "accuracy": float((predicted == data.y).float().mean()),
        "macro": {
            key: sum(c[key] for c in per_class.values()) / n_classes for key in ("precision", "recall", "f1")
        },
        "per_class": per_class,
        "confusion_matrix": {
            "labels": list(data.class_names),
            "rows_are": "actual",
            "matrix": confusion.tolist(),
        },
        "rows": len(data),
    }


def train(splits: Splits, config: TrainConfig, log: Callable[[str], object] = print) -> TabularMLP:
    """Mini-batch Adam; deterministic for a given seed and data (single thread)."""
    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    data = splits.train
    model = TabularMLP(len(data.feature_names), len(data.class_names), config.hidden)
    model.set_normalisation(data.x)
    optimiser = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    loss_fn = nn.CrossEntropyLoss()
    order_gen = torch.Generator().manual_seed(config.seed)
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(data), generator=order_gen)
        total = 0.0
        for start in range(0, len(data), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model(data.x[batch]), data.y[batch])
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        val_acc = evaluate(model, splits.validation)["accuracy"]
        log(f"epoch {epoch:3d}/{config.epochs}  loss {total / len(data):.4f}  val_acc {val_acc:.4f}")
    model.eval()
    return model


def run(data: Dataset, config: TrainConfig, out: Path = ARTIFACTS, source: str = "synthetic") -> dict[str, Any]:
    """Train, evaluate, write artifacts; raise AccuracyGateError under the gate."""
    splits = split(data, seed=config.seed)
    model = train(splits, config)
    report = {
        "test": evaluate(model, splits.test),
        "validation": evaluate(model, splits.validation),
        "data": {
            "source": source,
            "rows": len(data),
            "train_rows": len(splits.train),
            "validation_rows": len(splits.validation),
            "test_rows": len(splits.test),
        },
        "config": asdict(config),
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "feature_names": list(data.feature_names),
            "class_names": list(data.class_names),
            "hidden": config.hidden,
            # observed training ranges feed the drift signal and the model card
            "train_min": splits.train.x.min(dim=0).values.tolist(),
            "train_max": splits.train.x.max(dim=0).values.tolist(),
        },
        out / "checkpoint.pt",
    )
    torch.save({"x": splits.test.x, "y": splits.test.y}, out / "test_split.pt")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    accuracy = report["test"]["accuracy"]
    if accuracy < config.min_accuracy:
        raise AccuracyGateError(
            f"test accuracy {accuracy:.4f} is under the gate {config.min_accuracy:.4f}; "
            "the model was not accepted (set MIN_ACCURACY to change the gate)"
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", help="numeric CSV to train on (default: synthetic data)")
    parser.add_argument("--target", help="label column of --data")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--min-accuracy", type=float, default=TrainConfig.min_accuracy)
    parser.add_argument("--out", type=Path, default=ARTIFACTS)
    args = parser.parse_args(argv)
    config = TrainConfig(seed=args.seed, epochs=args.epochs, min_accuracy=args.min_accuracy)
    try:
        if args.data:
            if not args.target:
                parser.error("--data needs --target (the label column)")
            data, source = load_csv(args.data, args.target), str(args.data)
        else:
            data, source = make_synthetic(seed=config.seed), "synthetic"
        report = run(data, config, args.out, source)
    except (DataError, AccuracyGateError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 1
    test = report["test"]
    print(f"test accuracy {test['accuracy']:.4f}  macro F1 {test['macro']['f1']:.4f}")
    print(f"wrote {args.out}/checkpoint.pt, test_split.pt, report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
