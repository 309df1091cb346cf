"""common.settings_file and the servectl settings built on it: every serve_config/ file loads as
shipped, and a bad key or value fails at once with the file and the dotted key named."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml
from pydantic import Field

from common.settings_file import Settings, SettingsError, load_section
from servectl.config import lifecycle
from servectl.config.settings import SERVE_CONFIG, SERVECTL_CONFIG, Endpoint, ServectlConfig, ServeSettings

pytestmark = pytest.mark.unit


class Window(Settings):
    seconds: float = Field(gt=0)
    ticks: int


def written(tmp_path, doc, name="x.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_section_is_validated_into_its_model(tmp_path):
    path = written(tmp_path, {"watch": {"inner": {"seconds": 2.5, "ticks": 3}}})
    assert load_section(Window, path, "watch.inner") == Window(seconds=2.5, ticks=3)


@pytest.mark.parametrize(
    ("inner", "message"),
    [
        ({"seconds": 1, "ticks": "six"}, "watch.inner.ticks: Input should be a valid integer"),
        ({"seconds": 0, "ticks": 1}, "watch.inner.seconds: Input should be greater than 0"),
        ({"seconds": 1}, "watch.inner.ticks: Field required"),
        ({"seconds": 1, "ticks": 1, "tciks": 2}, "watch.inner.tciks: Extra inputs are not permitted"),
    ],
)
def test_a_bad_value_names_the_file_and_the_dotted_key(tmp_path, inner, message):
    path = written(tmp_path, {"watch": {"inner": inner}})
    with pytest.raises(SettingsError, match=f"^{re.escape(f'{path}: {message}')}"):
        load_section(Window, path, "watch.inner")


def test_a_missing_section_or_file_is_named(tmp_path):
    path = written(tmp_path, {"watch": {}})
    with pytest.raises(SettingsError, match=re.escape(f"{path}: watch.inner: Field required")):
        load_section(Window, path, "watch.inner")
    with pytest.raises(SettingsError, match=re.escape(str(tmp_path / "absent.yaml"))):
        load_section(Window, tmp_path / "absent.yaml")
    with pytest.raises(SettingsError, match="expected a mapping"):
        load_section(Window, written(tmp_path, [1, 2]))


def test_a_file_inside_the_repo_is_named_relative_to_it():
    with pytest.raises(SettingsError, match=r"^serve_config/lifecycle.yaml: (?s:.*)Extra inputs"):
        load_section(Window, SERVE_CONFIG / "lifecycle.yaml", "drain")


def test_the_shipped_lifecycle_file_loads_and_holds_every_value():
    config = lifecycle.load()
    doc = yaml.safe_load(lifecycle.LIFECYCLE_CONFIG.read_text())
    assert config.watch.max_failed_ticks == doc["watch"]["max_failed_ticks"]
    assert config.stop.timeout_seconds == doc["stop"]["timeout_seconds"]
    assert config.model_dump() == doc, "every key of the file is typed, none is defaulted"


def test_a_bad_key_in_a_copy_of_lifecycle_yaml_fails_naming_file_and_key(tmp_path):
    copy = tmp_path / "lifecycle.yaml"
    shutil.copy(lifecycle.LIFECYCLE_CONFIG, copy)
    copy.write_text(copy.read_text().replace("max_failed_ticks: 6", "max_failed_ticks: six"))
    with pytest.raises(SettingsError, match=f"^{re.escape(str(copy))}: watch.max_failed_ticks: Input should be a valid integer"):
        lifecycle.load(copy)
    copy.write_text(copy.read_text().replace("log_format: text", "log_format: xml"))
    with pytest.raises(SettingsError, match="log_format: Input should be 'text' or 'json'"):
        lifecycle.load(copy)


def test_servectl_keys_live_in_their_own_file_not_in_config_properties():
    own = ServectlConfig.load()
    doc = yaml.safe_load(SERVECTL_CONFIG.read_text())
    assert own.model_metrics_address == Endpoint.parse(doc["model_metrics_address"])
    assert own.canary_proxy_address == Endpoint.parse(doc["canary_proxy_address"])
    properties = (SERVE_CONFIG / "config.properties").read_text()
    assert not re.search(r"^(model_metrics|canary_proxy)_address", properties, re.M)
    settings = ServeSettings.load("m")
    assert (settings.model_metrics, settings.canary_proxy) == (own.model_metrics_address, own.canary_proxy_address)


def test_the_container_overlay_replaces_only_its_keys_and_a_bad_address_is_named(tmp_path):
    container = ServectlConfig.load(overlay=SERVE_CONFIG / "servectl.container.yaml")
    assert container.model_metrics_address.host == "0.0.0.0"
    assert container.canary_proxy_address == ServectlConfig.load().canary_proxy_address
    bad = written(tmp_path, {"model_metrics_address": "0.0.0.0:8083"}, "overlay.yaml")
    with pytest.raises(SettingsError, match=re.escape(f"{bad}: model_metrics_address: Value error, address")):
        ServectlConfig.load(overlay=bad)
