"""servectl.config.model_config: the typed view of serve_config/model-config.yaml that tests read."""

from __future__ import annotations

import pytest
import yaml

from common.settings_file import SettingsError
from servectl.config import model_config
from servectl.config.model_config import MODEL_CONFIG


def test_every_typed_field_is_the_value_in_the_file():
    doc = yaml.safe_load(MODEL_CONFIG.read_text())
    config = model_config.load()
    assert (config.min_workers, config.max_workers) == (doc["minWorkers"], doc["maxWorkers"])
    assert (config.batch_size, config.max_batch_delay_ms) == (doc["batchSize"], doc["maxBatchDelay"])
    assert config.response_timeout_s == doc["responseTimeout"]
    assert config.startup_timeout_s == doc["startupTimeout"]
    assert config.max_retry_timeout_s == doc["maxRetryTimeoutInSec"]
    assert config.max_rows == doc["handler"]["max_rows"]
    assert config.raw == doc, "the whole document, untyped keys included"
    config.raw["handler"]["max_rows"] = 1
    assert config.raw["handler"]["max_rows"] == doc["handler"]["max_rows"], "a copy: the config does not change"


def test_a_changed_copy_keeps_every_other_key(tmp_path):
    config = model_config.load()
    path = tmp_path / "model-config.yaml"
    path.write_text(config.with_values(response_timeout_s=4, max_rows=20).to_yaml())
    doc, shipped = yaml.safe_load(path.read_text()), yaml.safe_load(MODEL_CONFIG.read_text())
    assert doc == {**shipped, "responseTimeout": 4, "handler": {**shipped["handler"], "max_rows": 20}}
    changed = model_config.load(path)
    assert (changed.response_timeout_s, changed.max_rows, changed.min_workers) == (4, 20, config.min_workers)
    assert changed == config.with_values(response_timeout_s=4, max_rows=20)
    assert model_config.load() == config, "the shipped file is untouched"


def test_a_missing_key_names_itself(tmp_path):
    doc = yaml.safe_load(MODEL_CONFIG.read_text())
    del doc["handler"]["max_rows"]
    path = tmp_path / "model-config.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SettingsError, match=r"model-config.yaml: handler.max_rows: Field required"):
        model_config.load(path)


def test_a_bad_value_names_the_file_and_key(tmp_path):
    doc = yaml.safe_load(MODEL_CONFIG.read_text())
    doc["minWorkers"] = "two"
    path = tmp_path / "model-config.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SettingsError, match=rf"^{path}: minWorkers: Input should be a valid integer"):
        model_config.load(path)
