"""Evaluation metrics from scikit-learn, in the report's shape (accuracy, macro and per-class
precision/recall/F1, the confusion matrix): one function for training, export and variants."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def evaluate_predictions(y_true: torch.Tensor, y_pred: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Metrics of predicted class ids against the true ones; a class never predicted scores 0
    precision (zero_division=0), as the hand-written loop it replaces did."""
    labels = list(range(len(class_names)))
    true, pred = y_true.numpy(), y_pred.numpy()
    precision, recall, f1, support = precision_recall_fscore_support(true, pred, labels=labels, zero_division=0.0)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "accuracy": float(accuracy_score(true, pred)),
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "per_class": per_class,
        "confusion_matrix": {
            "labels": list(class_names),
            "rows_are": "actual",
            "matrix": confusion_matrix(true, pred, labels=labels).tolist(),
        },
        "rows": len(true),
    }
