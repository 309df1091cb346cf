"""The training report: scikit-learn's metrics equal the hand-written ones they replaced, and
`make train`'s files (history, PNGs, report.md) are written, linked and packed."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest
import torch

from common.model_card import METADATA_FILE, ModelCard
from model import archive, data, train
from model.evaluation import evaluate_predictions
from model.report import REPORT_FILES
from tests.conftest import REPO


def hand_written(y: torch.Tensor, predicted: torch.Tensor, class_names: tuple[str, ...]) -> dict:
    """The loop model.train.evaluate ran before scikit-learn (kept here as the reference)."""
    n_classes = len(class_names)
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
    confusion.index_put_((y, predicted), torch.ones_like(y), accumulate=True)
    per_class = {}
    for i, name in enumerate(class_names):
        tp = int(confusion[i, i])
        predicted_i = int(confusion[:, i].sum())
        actual_i = int(confusion[i, :].sum())
        precision = tp / predicted_i if predicted_i else 0.0
        recall = tp / actual_i if actual_i else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual_i}
    return {
        "accuracy": float((predicted == y).float().mean()),
        "macro": {k: sum(c[k] for c in per_class.values()) / n_classes for k in ("precision", "recall", "f1")},
        "per_class": per_class,
        "confusion_matrix": {"labels": list(class_names), "rows_are": "actual", "matrix": confusion.tolist()},
        "rows": len(y),
    }


@pytest.mark.parametrize("seed", range(5))
def test_scikit_learn_metrics_equal_the_hand_written_ones_on_the_same_predictions(seed):
    gen = torch.Generator().manual_seed(seed)
    classes = ("a", "b", "c", "d")
    y = torch.randint(0, 4, (200,), generator=gen)
    predicted = torch.where(torch.rand(200, generator=gen) < 0.7, y, torch.randint(0, 4, (200,), generator=gen))
    if seed == 0:
        predicted[predicted == 3] = 0  # a class never predicted: precision 0, not a division error
    got, want = evaluate_predictions(y, predicted, classes), hand_written(y, predicted, classes)
    assert got["confusion_matrix"] == want["confusion_matrix"] and got["rows"] == want["rows"]
    assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-7)
    assert got["macro"] == pytest.approx(want["macro"], abs=1e-12)
    for name in classes:
        assert got["per_class"][name] == pytest.approx(want["per_class"][name], abs=1e-12)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    report = train.run(data.make_synthetic(n_rows=300, seed=3), train.TrainConfig(epochs=4, min_accuracy=0.0), out)
    return out, report


def test_train_writes_every_report_file(trained):
    out, report = trained
    assert all((out / name).is_file() for name in REPORT_FILES)
    for png in ("learning_curves.png", "confusion_matrix.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_history_has_one_row_per_epoch(trained):
    out, _ = trained
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert all(set(h) == {"epoch", "train_loss", "validation_loss", "validation_accuracy"} for h in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_report_md_is_what_a_person_reads_first(trained):
    out, report = trained
    text = (out / "report.md").read_text()
    assert "](learning_curves.png)" in text and "](confusion_matrix.png)" in text
    assert "210 train, 45 validation, 45 test" in text
    assert "## Accuracy paradox check" in text and "majority class" in text
    for name, c in report["test"]["per_class"].items():
        assert f"| {name} | {c['precision']:.4f} | {c['recall']:.4f} |" in text


def test_the_card_references_the_report_and_the_mar_packs_it(tiny_artifacts, tmp_path):
    card = ModelCard.load(tiny_artifacts / METADATA_FILE)
    assert card.references == REPORT_FILES
    mar = archive.archive(tiny_artifacts, tmp_path / "store", tmp_path / "build")
    assert set(REPORT_FILES) <= set(zipfile.ZipFile(mar).namelist())


def test_progress_stays_quiet_when_not_a_terminal(tmp_path):
    """Through a pipe (CI, make's log) the progress bar prints nothing per epoch."""
    done = subprocess.run(
        [sys.executable, "-m", "model.train", "--epochs", "3", "--min-accuracy", "0", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "epoch" not in done.stderr and "it/s" not in done.stderr
    assert "test accuracy" in done.stdout


def test_minmax_scaling_is_offered_and_recorded(tmp_path):
    config = train.TrainConfig(epochs=2, min_accuracy=0.0, scaling="minmax")
    report = train.run(data.make_synthetic(n_rows=300), config, tmp_path)
    assert report["config"]["scaling"] == "minmax"
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["scaling"] == "minmax"
    assert "Scaling: minmax" in (tmp_path / "report.md").read_text()
