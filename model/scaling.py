"""Measure SCALING=standard against SCALING=minmax: same network, seeds and epochs, on the
synthetic data and on two public data sets that scikit-learn ships inside its wheel (no download).

    python -m model.scaling [--seeds 3]

Prints a Markdown table (README "Training report" quotes it); the default in model.train is
the scaling that wins on it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

import torch
from sklearn.datasets import load_breast_cancer, load_wine

from model.data import Dataset, make_synthetic, split
from model.network import SCALINGS
from model.train import TrainConfig, evaluate, train


def from_sklearn(loader: Callable[..., object]) -> Dataset:
    bunch = loader()
    x = torch.tensor(bunch.data, dtype=torch.float32)  # type: ignore[attr-defined]
    y = torch.tensor(bunch.target, dtype=torch.long)  # type: ignore[attr-defined]
    names = tuple(str(n) for n in bunch.feature_names)  # type: ignore[attr-defined]
    return Dataset(x, y, names, tuple(str(c) for c in bunch.target_names))  # type: ignore[attr-defined]


DATASETS: dict[str, Callable[[], Dataset]] = {
    "synthetic (1000 rows, 10 features, 3 classes)": make_synthetic,
    "scikit-learn wine (178 rows, 13 features, 3 classes)": lambda: from_sklearn(load_wine),
    "scikit-learn breast cancer (569 rows, 30 features, 2 classes)": lambda: from_sklearn(load_breast_cancer),
}


def measure(data: Dataset, scaling: str, seed: int) -> tuple[float, float]:
    """Test accuracy and macro F1 of one training run."""
    config = TrainConfig(seed=seed, scaling=scaling)
    splits = split(data, seed=seed)
    model, _ = train(splits, config)
    metrics = evaluate(model, splits.test)
    return metrics["accuracy"], metrics["macro"]["f1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"| data | scaling | test accuracy (mean of {args.seeds} seeds) | macro F1 | worst seed accuracy |")
    print("| --- | --- | ---: | ---: | ---: |")
    for label, make in DATASETS.items():
        data = make()
        for scaling in SCALINGS:
            runs = [measure(data, scaling, seed) for seed in range(args.seeds)]
            acc = [a for a, _ in runs]
            f1 = statistics.mean(f for _, f in runs)
            print(f"| {label} | {scaling} | {statistics.mean(acc):.4f} | {f1:.4f} | {min(acc):.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
