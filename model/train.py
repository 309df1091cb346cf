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
from tqdm import tqdm

from model.data import DataError, Dataset, Splits, load_csv, make_synthetic, split
from model.evaluation import evaluate_predictions
from model.network import SCALINGS, TabularMLP
from model.report import REPORT_FILES, write_report

__all__ = ["REPORT_FILES", "TrainConfig", "evaluate", "run", "train"]

ARTIFACTS = Path("artifacts")
# minmax (the seed's [0, 1]) beat standard on mean test accuracy over 5 seeds on the synthetic
# data (0.9667 vs 0.9627) and scikit-learn's breast cancer set (0.9835 vs 0.9741), tied on wine
# (1.0): `python -m model.scaling`, README "Training report"
DEFAULT_SCALING = "minmax"


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    hidden: int = 32
    min_accuracy: float = 0.90
    scaling: str = DEFAULT_SCALING


class AccuracyGateError(RuntimeError):
    """Test accuracy is under the configured gate."""


def evaluate(model: Callable[[torch.Tensor], torch.Tensor], data: Dataset) -> dict[str, Any]:
    """Accuracy, macro and per-class precision/recall/F1, and the confusion matrix (scikit-learn)."""
    if isinstance(model, nn.Module):
        model.eval()
    with torch.inference_mode():
        predicted = model(data.x).argmax(dim=1)
    return evaluate_predictions(data.y, predicted, data.class_names)


@dataclass(frozen=True)
class Epoch:
    """One row of the learning curves (history.json)."""

    epoch: int
    train_loss: float
    validation_loss: float
    validation_accuracy: float


def train(splits: Splits, config: TrainConfig) -> tuple[TabularMLP, list[Epoch]]:
    """Mini-batch Adam; deterministic for a given seed and data (single thread). The progress
    bar (tqdm) shows each epoch on a terminal and stays silent when stderr is not one."""
    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    data = splits.train
    model = TabularMLP(len(data.feature_names), len(data.class_names), config.hidden)
    model.set_normalisation(data.x, config.scaling)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    order_gen = torch.Generator().manual_seed(config.seed)
    history = []
    bar = tqdm(range(1, config.epochs + 1), desc="train", unit="epoch", disable=None, file=sys.stderr)
    for epoch in bar:
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
        history.append(validate(model, splits.validation, epoch, total / len(data), loss_fn))
        bar.set_postfix(loss=f"{history[-1].train_loss:.4f}", val_acc=f"{history[-1].validation_accuracy:.4f}")
    model.eval()
    return model, history


def validate(model: TabularMLP, data: Dataset, epoch: int, train_loss: float, loss_fn: nn.Module) -> Epoch:
    model.eval()
    with torch.inference_mode():
        logits = model(data.x)
        loss = float(loss_fn(logits, data.y))
        accuracy = float((logits.argmax(dim=1) == data.y).float().mean())
    return Epoch(epoch, train_loss, loss, accuracy)


def run(data: Dataset, config: TrainConfig, out: Path = ARTIFACTS, source: str = "synthetic") -> dict[str, Any]:
    """Train, evaluate, write artifacts and the training report; raise AccuracyGateError under the gate."""
    splits = split(data, seed=config.seed)
    model, history = train(splits, config)
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
            "scaling": config.scaling,
            # observed training statistics feed the drift signal, the explanations' baseline and the card
            "train_min": splits.train.x.min(dim=0).values.tolist(),
            "train_max": splits.train.x.max(dim=0).values.tolist(),
            "train_mean": splits.train.x.mean(dim=0).tolist(),
            "train_std": splits.train.x.std(dim=0).tolist(),
        },
        out / "checkpoint.pt",
    )
    torch.save({"x": splits.test.x, "y": splits.test.y}, out / "test_split.pt")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_report(out, report, [asdict(e) for e in history], splits)
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
    parser.add_argument("--scaling", choices=SCALINGS, default=TrainConfig.scaling)
    parser.add_argument("--out", type=Path, default=ARTIFACTS)
    args = parser.parse_args(argv)
    config = TrainConfig(seed=args.seed, epochs=args.epochs, min_accuracy=args.min_accuracy, scaling=args.scaling)
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
    print(f"wrote {args.out}/checkpoint.pt, test_split.pt and the training report: {', '.join(REPORT_FILES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
