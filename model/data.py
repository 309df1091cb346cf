"""Data sets for the example classifier: a seeded synthetic one, or any numeric CSV.

Both give a :class:`Dataset` with the feature and class names that end up in the
metadata JSON, so nothing downstream hard-codes them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch

SYNTHETIC_FEATURES = tuple(f"f{i}" for i in range(1, 11))
SYNTHETIC_CLASSES = ("alpha", "beta", "gamma")


class DataError(ValueError):
    """The input data cannot be used for training; the message says why."""


@dataclass(frozen=True)
class Dataset:
    """Features ``x`` (float32, [n, F]) and class ids ``y`` (int64, [n])."""

    x: torch.Tensor
    y: torch.Tensor
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]

    def subset(self, index: torch.Tensor) -> Dataset:
        return Dataset(self.x[index], self.y[index], self.feature_names, self.class_names)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Splits:
    train: Dataset
    validation: Dataset
    test: Dataset


def make_synthetic(n_rows: int = 1000, seed: int = 0) -> Dataset:
    """Three Gaussian classes in 10-D with overlapping tails and very different scales.

    Class centres sit about 3 standard deviations apart, so a linear model gets most
    rows right but not all, and the raw feature scales (0.01 to 1000) make training
    fail without the normalisation the network carries.
    """
    gen = torch.Generator().manual_seed(seed)
    n_features, n_classes = len(SYNTHETIC_FEATURES), len(SYNTHETIC_CLASSES)
    centres = torch.randn(n_classes, n_features, generator=gen) * 1.0
    y = torch.arange(n_rows) % n_classes
    y = y[torch.randperm(n_rows, generator=gen)]
    noise = torch.randn(n_rows, n_features, generator=gen)
    # a non-linear twist: class 2 is pushed along a direction that depends on f1's sign
    x = centres[y] + noise
    x[:, 1] += torch.where(y == 2, 1.5 * torch.sign(x[:, 0]), torch.zeros(n_rows))
    scales = 10.0 ** torch.linspace(-2, 3, n_features)
    offsets = torch.linspace(-50, 50, n_features)
    x = x * scales + offsets
    return Dataset(x.float(), y.long(), SYNTHETIC_FEATURES, SYNTHETIC_CLASSES)


def load_csv(path: str | Path, target: str) -> Dataset:
    """Every column but ``target`` is a numeric feature; the label values are the classes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: empty file") from None
        if target not in header:
            raise DataError(f"{path}: no column {target!r}; columns are {header}")
        if len(set(header)) != len(header):
            raise DataError(f"{path}: duplicate column names in header {header}")
        t = header.index(target)
        feature_names = tuple(h for i, h in enumerate(header) if i != t)
        rows: list[list[float]] = []
        labels: list[str] = []
        for line_no, record in enumerate(reader, start=2):
            if not record or all(not v.strip() for v in record):
                continue
            if len(record) != len(header):
                raise DataError(f"{path}:{line_no}: expected {len(header)} fields, got {len(record)}")
            row = []
            for i, value in enumerate(record):
                if i == t:
                    continue
                try:
                    number = float(value)
                except ValueError:
                    raise DataError(
                        f"{path}:{line_no}: column {header[i]!r}: {value!r} is not a number"
                    ) from None
                if number != number or number in (float("inf"), float("-inf")):
                    raise DataError(f"{path}:{line_no}: column {header[i]!r}: not finite")
                row.append(number)
            rows.append(row)
            labels.append(record[t].strip())
    class_names = tuple(sorted(set(labels)))
    if len(rows) < 10:
        raise DataError(f"{path}: {len(rows)} data rows; at least 10 are needed")
    if len(class_names) < 2:
        raise DataError(f"{path}: column {target!r} has fewer than 2 distinct values")
    class_index = {name: i for i, name in enumerate(class_names)}
    x = torch.tensor(rows, dtype=torch.float32)
    y = torch.tensor([class_index[label] for label in labels], dtype=torch.long)
    return Dataset(x, y, feature_names, class_names)


def split(data: Dataset, seed: int = 0, validation: float = 0.15, test: float = 0.15) -> Splits:
    """A seeded shuffle cut into train / validation / test."""
    n = len(data)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    n_test = max(1, round(n * test))
    n_val = max(1, round(n * validation))
    return Splits(
        train=data.subset(order[n_test + n_val :]),
        validation=data.subset(order[n_test : n_test + n_val]),
        test=data.subset(order[:n_test]),
    )
