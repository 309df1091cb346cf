"""The training report: what a person reads first about a trained model.

``make train`` writes, beside report.json (the metrics, scikit-learn's): history.json (per-epoch
train loss, validation loss and accuracy), learning_curves.png, confusion_matrix.png (counts and
row-normalised) and report.md, which links the PNGs. Export lists these files in the model
card's ``references`` and the archive packs them, so a served model shows how it was made.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only, no display: before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from model.data import Splits

REPORT_FILES = ("report.md", "report.json", "history.json", "learning_curves.png", "confusion_matrix.png")


def write_report(out: Path, report: dict[str, Any], history: Sequence[dict[str, float]], splits: Splits) -> None:
    (out / "history.json").write_text(json.dumps(list(history), indent=2) + "\n")
    plot_learning_curves(history, out / "learning_curves.png")
    test = report["test"]
    plot_confusion(
        np.array(test["confusion_matrix"]["matrix"]), test["confusion_matrix"]["labels"], out / "confusion_matrix.png"
    )
    (out / "report.md").write_text(markdown(report, history, majority_baseline(splits)))


def majority_baseline(splits: Splits) -> dict[str, Any]:
    """What always predicting the training split's most frequent class scores on the test split."""
    counts = np.bincount(splits.train.y.numpy(), minlength=len(splits.train.class_names))
    majority = int(counts.argmax())
    test_y = splits.test.y.numpy()
    return {"class": splits.train.class_names[majority], "accuracy": float((test_y == majority).mean())}


def plot_learning_curves(history: Sequence[dict[str, float]], path: Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="training loss")
    loss_ax.plot(epochs, [h["validation_loss"] for h in history], label="validation loss")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss per epoch")
    loss_ax.legend()
    accuracy = [h["validation_accuracy"] for h in history]
    acc_ax.plot(epochs, accuracy, color="tab:green")
    low = max(0.0, min(accuracy) - 0.05)  # zoomed in: the last points of a good model differ little
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy per epoch", ylim=(low, 1.005))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, labels: Sequence[str], path: Path) -> None:
    """Counts beside row-normalised rates (each row: how one actual class was predicted)."""
    rows = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    for ax, values, title, fmt in ((axes[0], matrix, "counts", "{:d}"), (axes[1], rates, "row-normalised", "{:.2f}")):
        image = ax.imshow(values, cmap="Blues", vmin=0)
        ax.set(
            xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
            xlabel="predicted class", ylabel="actual class", title=f"Confusion matrix, test split ({title})",
        )  # fmt: skip
        high = values.max() / 2
        for i in range(len(labels)):
            for j in range(len(labels)):
                value = int(values[i, j]) if fmt == "{:d}" else float(values[i, j])
                ax.text(
                    j, i, fmt.format(value), ha="center", va="center", color="white" if values[i, j] > high else "black"
                )
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(report: dict[str, Any], history: Sequence[dict[str, float]], baseline: dict[str, Any]) -> str:
    data, test, config = report["data"], report["test"], report["config"]
    best = max(history, key=lambda h: h["validation_accuracy"])
    lines = [
        "# Training report",
        "",
        f"Data: {data['source']}, {data['rows']} rows: {data['train_rows']} train, "
        f"{data['validation_rows']} validation, {data['test_rows']} test (seeded shuffle). "
        f"Scaling: {config.get('scaling', 'standard')}; {config['epochs']} epochs, seed {config['seed']}.",
        "",
        f"Test accuracy **{test['accuracy']:.4f}**, macro F1 **{test['macro']['f1']:.4f}** "
        f"(gate: accuracy >= {config['min_accuracy']:.2f}). "
        f"Validation accuracy {report['validation']['accuracy']:.4f}; "
        f"best epoch by validation accuracy: {best['epoch']} ({best['validation_accuracy']:.4f}).",
        "",
        "## Metrics per class (test split)",
        "",
        "| class | precision | recall | F1 | support |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, c in test["per_class"].items():
        lines.append(f"| {name} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |")
    lines += [
        "",
        "## Accuracy paradox check",
        "",
        f"Always predicting the majority class of the training split ({baseline['class']}) scores "
        f"{baseline['accuracy']:.4f} accuracy on the test split, and recall 1 on that class and 0 on every other. "
        "A model is only better than that if every class's recall is well above 0:",
        "",
        "| class | model recall | majority-class baseline recall |",
        "| --- | ---: | ---: |",
    ]
    for name, c in test["per_class"].items():
        lines.append(f"| {name} | {c['recall']:.4f} | {1.0 if name == baseline['class'] else 0.0:.1f} |")
    worst = min(test["per_class"].items(), key=lambda kv: kv[1]["recall"])
    lines += [
        "",
        f"Lowest recall: {worst[0]} ({worst[1]['recall']:.4f}); model accuracy {test['accuracy']:.4f} "
        f"against the baseline's {baseline['accuracy']:.4f}.",
        "",
        "## Learning curves",
        "",
        "![Training and validation loss, validation accuracy per epoch](learning_curves.png)",
        "",
        "Per-epoch numbers: [history.json](history.json).",
        "",
        "## Confusion matrix (test split)",
        "",
        "![Confusion matrix: counts and row-normalised](confusion_matrix.png)",
        "",
        "All metrics: [report.json](report.json) (scikit-learn).",
        "",
    ]
    return "\n".join(lines)
