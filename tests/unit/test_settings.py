"""handlers.settings: the shipped handler section loads, and a wrong or missing key fails the
load naming the file and the key, once, at start-up."""

from __future__ import annotations

import copy

import pytest

from handlers.settings import SettingsError, from_config
from tests.conftest import HANDLER_SETTINGS, MODEL_CONFIG


def changed(path: str, value: object) -> dict:
    doc = copy.deepcopy(dict(MODEL_CONFIG.raw))
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[part]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return doc


def test_the_shipped_section_is_typed_with_its_values():
    assert HANDLER_SETTINGS.max_rows == MODEL_CONFIG.max_rows
    assert HANDLER_SETTINGS.explain.max_rows == MODEL_CONFIG.explain_max_rows


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("handler.explain.steps", "64", "model-config.yaml: handler.explain.steps: "),
        ("handler.max_rows", 0, "model-config.yaml: handler.max_rows: "),
        ("handler.max_rows", KeyError, "model-config.yaml: handler.max_rows: Field required"),
        ("handler.max_rwos", 5, "model-config.yaml: handler.max_rwos: Extra inputs are not permitted"),
        ("handler.observability.access_log", "some", "model-config.yaml: handler.observability.access_log: "),
    ],
)
def test_a_wrong_key_names_the_file_and_the_key(path, value, message):
    with pytest.raises(SettingsError) as exc:
        from_config(changed(path, value))
    assert str(exc.value).startswith(message), str(exc.value)


def test_no_handler_section_fails_the_load():
    with pytest.raises(SettingsError, match="model-config.yaml: handler: Field required"):
        from_config({"minWorkers": 1})
