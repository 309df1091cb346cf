"""The rendered configuration of an instance: loopback everywhere, per-instance gRPC ports,
no workflow store, and property overrides that reach the file TorchServe reads."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from servectl.__main__ import main
from servectl.config.settings import CONFIG_PROPERTIES, ServeSettings, read_properties

ADDRESSES = ("inference_address", "management_address", "metrics_address")


def test_the_shipped_config_binds_every_server_to_loopback_and_restricts_registration():
    props = read_properties(CONFIG_PROPERTIES)
    assert all(urlsplit(props[key]).hostname == "127.0.0.1" for key in ADDRESSES)
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    # registration (servectl.release.lifecycle) on the loopback management port, from the store only
    assert props["enable_model_api"] == "true" and props["enable_envvars_config"] == "false"
    assert props["allowed_urls"].startswith("file://") and "http" not in props["allowed_urls"]
    assert 0 < int(props["max_request_size"]) <= 16 * 2**20  # a hardening cap, not a copy of the value


def test_two_instances_get_distinct_grpc_ports_and_an_empty_workflow_store(tmp_path):
    rendered = []
    for i in range(2):
        settings = ServeSettings.load("m", run_dir=tmp_path / str(i)).with_ports(10000 + i, 10100 + i, 10200 + i)
        rendered.append(read_properties(settings.render()))
    grpc = [(p["grpc_inference_port"], p["grpc_management_port"]) for p in rendered]
    assert grpc[0] != grpc[1] and len(set(grpc[0])) == 2
    for i, props in enumerate(rendered):
        store = tmp_path / str(i) / "no-workflows"
        assert props["workflow_store"] == str(store) and store.is_dir() and not any(store.iterdir())
        assert props["grpc_inference_address"] == "127.0.0.1"


def test_property_overrides_reach_the_rendered_file(tmp_path):
    settings = ServeSettings.load("m", run_dir=tmp_path).with_properties(disable_token_authorization="false")
    assert settings.token_auth
    assert read_properties(settings.render())["disable_token_authorization"] == "false"
    assert not ServeSettings.load("m").token_auth  # the shipped decision: off


def test_cli_set_rejects_a_malformed_override(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["status", "--set", "no-equals-sign"])
    assert exc.value.code == 2
    assert "--set takes KEY=VALUE" in capsys.readouterr().err
