"""What the handler takes from its settings, loaded through TorchServe's own loader from a
real .mar: ``handler.torch_threads`` (threads per worker, set in model-config.yaml only), the
garbage collector's ``handler.gc_young_threshold``,
and the refusal it writes for servectl when the model card check fails."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.model_loader import TsModelLoader
from ts.service import Service

from common.load_status import ENV as LOAD_STATUS_ENV
from common.load_status import read_refusal
from common.model_card import ModelCardError
from model import archive
from tests.conftest import REPO
from tests.unit.test_handler import decode, request

MODEL_CONFIG = REPO / "serve_config/model-config.yaml"


def unpacked_mar(tiny_artifacts: Path, tmp: Path, **handler_settings: object) -> Path:
    """The tiny model archived with model-config.yaml's handler section changed, unpacked
    the way TorchServe unpacks it for a worker."""
    config = yaml.safe_load(MODEL_CONFIG.read_text())
    config["handler"].update(handler_settings)
    (tmp / "model-config.yaml").write_text(yaml.safe_dump(config))
    mar = archive.archive(tiny_artifacts, tmp / "store", tmp / "build", tmp / "model-config.yaml")
    model_dir = tmp / "model"
    zipfile.ZipFile(mar).extractall(model_dir)
    return model_dir


def load(model_dir: Path) -> Service:
    sys.path.insert(0, str(model_dir))
    try:
        metrics = MetricsCacheYamlImpl(config_file_path=str(REPO / "serve_config/metrics.yaml"))
        metrics.initialize_cache()
        service = TsModelLoader().load("tiny", str(model_dir), "tabular_handler.py", None, 8, None, True, metrics)
    finally:
        sys.path.remove(str(model_dir))
    service.set_cl_socket(None)
    return service


@pytest.fixture
def restore_threads() -> Iterator[None]:
    """The handler sets this process's torch threads; put them back for the other tests."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_shipped_config_pins_one_thread_per_worker():
    assert yaml.safe_load(MODEL_CONFIG.read_text())["handler"]["torch_threads"] == 1


def test_torch_threads_from_model_config_are_set_by_the_handler(tiny_artifacts, tmp_path, restore_threads):
    torch.set_num_threads(1)
    service = load(unpacked_mar(tiny_artifacts, tmp_path, torch_threads=3))
    assert torch.get_num_threads() == 3
    code, answers = decode(service.predict([request({"instances": [[0.5] * 10]})]))
    assert code == 200 and answers[0].status == 200


def test_the_gc_young_threshold_from_model_config_is_set_by_the_handler(tiny_artifacts, tmp_path):
    (tmp_path / "bad").mkdir()
    before = gc.get_threshold()
    try:
        load(unpacked_mar(tiny_artifacts, tmp_path, gc_young_threshold=4321))
        assert gc.get_threshold() == (4321, *before[1:])
    finally:
        gc.set_threshold(*before)
    with pytest.raises(ValueError, match="handler.gc_young_threshold"):
        load(unpacked_mar(tiny_artifacts, tmp_path / "bad", gc_young_threshold=0))


def test_a_fresh_worker_gets_its_threads_and_one_inter_op_thread(tiny_artifacts, tmp_path):
    """Inter-op threads can be set once per process, before any parallel work: a fresh
    process, as a TorchServe worker is, shows what the handler sets."""
    model_dir = unpacked_mar(tiny_artifacts, tmp_path, torch_threads=2)
    script = f"""
import sys, torch
sys.path.insert(0, {str(REPO)!r})
from tests.unit.test_handler_settings import load
from pathlib import Path
load(Path({str(model_dir)!r}))
print(torch.get_num_threads(), torch.get_num_interop_threads())
"""
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}  # the handler's setting wins over the variable
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["2", "1"]


@pytest.mark.parametrize("value", [0, -1, "2", 1.5, True])
def test_a_bad_torch_threads_value_refuses_to_load(tiny_artifacts, tmp_path, value, restore_threads):
    with pytest.raises(ValueError, match="handler.torch_threads"):
        load(unpacked_mar(tiny_artifacts, tmp_path, torch_threads=value))


def test_a_refused_model_card_is_written_for_servectl(tiny_artifacts, tmp_path, monkeypatch, restore_threads):
    status = tmp_path / "load-status.json"
    monkeypatch.setenv(LOAD_STATUS_ENV, str(status))
    model_dir = unpacked_mar(tiny_artifacts, tmp_path)
    with open(model_dir / "model.pt", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ModelCardError, match="sha256 .* does not match"):
        load(model_dir)
    reason = read_refusal(status, "tiny")
    assert reason is not None and "does not match the metadata" in reason
    assert json.loads(status.read_text())["status"] == "refused"
    assert read_refusal(status, "another_model") is None


def test_a_model_that_loads_writes_no_refusal(tiny_artifacts, tmp_path, monkeypatch, restore_threads):
    status = tmp_path / "load-status.json"
    monkeypatch.setenv(LOAD_STATUS_ENV, str(status))
    load(unpacked_mar(tiny_artifacts, tmp_path))
    assert not status.exists()
