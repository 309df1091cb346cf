"""Every model variant: built from the same eager model, loaded as the handler loads it
(handlers.runtimes), held to its gates, and recorded in the card."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.model_card import METADATA_FILE, VARIANTS, ModelCard, ModelCardError, sha256_of
from handlers import runtimes
from model import export, variants

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def test_x(tiny_artifacts) -> torch.Tensor:
    return torch.load(tiny_artifacts / "test_split.pt", weights_only=True)["x"]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_card_records_the_variant_its_runtime_and_its_sha256(variant_artifacts, name):
    out, card = variant_artifacts[name]
    assert ModelCard.load(out / METADATA_FILE) == card
    assert (card.variant, card.runtime, card.model_file) == (name, VARIANTS[name].runtime, VARIANTS[name].model_file)
    assert card.sha256 == sha256_of(out / card.model_file)
    assert card.metrics["test"]["rows"] == 45 and 0 <= card.metrics["test"]["accuracy"] <= 1


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_file_matches_eager_within_its_tolerance(variant_artifacts, test_x, name):
    out, card = variant_artifacts[name]
    eager, _ = export.load_eager(out)
    loaded = variants.load(name, out / card.model_file)
    diff = variants.check_parity(name, eager, loaded, test_x)
    assert diff <= variants.RECIPES[name].tolerance
    logits = loaded(test_x)
    assert logits.dtype == torch.float32 and logits.shape == (len(test_x), len(card.class_names))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_batch_axis_is_dynamic(variant_artifacts, test_x, name):
    out, card = variant_artifacts[name]
    loaded = variants.load(name, out / card.model_file)
    whole = variants.probabilities(loaded, test_x)
    for n in (1, 7, len(test_x)):
        got = variants.probabilities(loaded, test_x[:n])
        assert got.shape == (n, len(card.class_names))
        assert torch.allclose(got, whole[:n], atol=variants.batch_atol(name))


def test_float_variants_have_tight_tolerances_and_int8_a_measured_looser_one():
    assert all(variants.RECIPES[v].tolerance <= 1e-5 for v in ("torchscript", "onnx", "export"))
    assert variants.RECIPES["int8"].tolerance > 1e-3


@pytest.mark.parametrize("name", list(VARIANTS))
def test_autograd_only_where_the_variant_says(variant_artifacts, test_x, name):
    out, card = variant_artifacts[name]
    runtime = variants.load(name, out / card.model_file)
    if not VARIANTS[name].autograd:
        assert runtime.differentiable is None
        return
    x = test_x[:3].clone().requires_grad_(True)
    runtime.differentiable(x).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_a_variant_over_its_parity_tolerance_fails_the_export_naming_the_gate(tiny_artifacts, tmp_path, monkeypatch, capsys):
    for item in tiny_artifacts.iterdir():
        shutil.copy2(item, tmp_path / item.name)
    monkeypatch.setitem(variants.RECIPES, "int8", variants.Recipe(variants.build_int8, 1e-9))
    assert export.main(["--name", "t", "--version", "1", "--artifacts", str(tmp_path), "--variant", "int8"]) == 1
    assert "variant int8: the parity gate failed" in capsys.readouterr().err


def test_a_variant_under_the_accuracy_gate_fails_the_export_naming_the_gate(tiny_artifacts, tmp_path, capsys):
    for item in tiny_artifacts.iterdir():
        shutil.copy2(item, tmp_path / item.name)
    report = (tmp_path / "report.json").read_text().replace('"min_accuracy": 0.0', '"min_accuracy": 1.01')
    (tmp_path / "report.json").write_text(report)
    assert export.main(["--name", "t", "--version", "1", "--artifacts", str(tmp_path), "--variant", "onnx"]) == 1
    assert "variant onnx: the accuracy gate failed" in capsys.readouterr().err


def test_a_card_naming_a_runtime_its_variant_does_not_have_is_refused(variant_artifacts):
    data = variant_artifacts["onnx"][1].to_dict()
    data["runtime"] = "torchscript"
    with pytest.raises(ModelCardError, match="variant 'onnx' with runtime 'torchscript'"):
        ModelCard.from_dict(data)


def test_an_unknown_runtime_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        runtimes.load("tensorrt", "x", 1, autograd=False)


def test_a_card_from_before_variants_reads_as_torchscript(variant_artifacts):
    data = variant_artifacts["torchscript"][1].to_dict()
    for key in ("variant", "runtime", "references"):
        del data[key]
    card = ModelCard.from_dict(data)
    assert (card.variant, card.runtime, card.references) == ("torchscript", "torchscript", ())


def test_onnx_runs_with_the_configured_threads(variant_artifacts):
    """The session takes handler.torch_threads intra-op threads (BaseHandler's would take every CPU)."""
    import onnxruntime as ort

    out, card = variant_artifacts["onnx"]
    options = ort.SessionOptions()
    assert options.intra_op_num_threads == 0  # 0 = ORT's default, all cores: what runtimes overrides
    runtime = runtimes.load("onnxruntime", str(out / card.model_file), 1, autograd=False)
    assert runtime.name == "onnxruntime"


def test_a_worker_imports_onnxruntime_only_when_its_variant_uses_it(variant_artifacts):
    """TorchServe's BaseHandler imports onnxruntime at module load (18 MiB per worker); the
    handler defers it, and the onnx variant still loads through the deferred module. A fresh
    interpreter, because this test process may have imported onnxruntime already."""
    out, card = variant_artifacts["onnx"]
    script = f"""
import sys
import handlers.tabular_handler
import ts.torch_handler.base_handler as base
assert base.ONNX_AVAILABLE, "BaseHandler must still see onnxruntime as installed"
assert "onnxruntime.capi" not in sys.modules, "onnxruntime was imported at handler load"
from handlers import runtimes
import torch
runtime = runtimes.load("onnxruntime", {str(out / card.model_file)!r}, 1, autograd=False)
assert runtime(torch.zeros(2, {card.n_features})).shape == (2, {len(card.class_names)})
assert "onnxruntime.capi" in sys.modules
print(type(base.ort.SessionOptions()).__name__)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "SessionOptions"
