"""Typed server settings: TorchServe's ``serve_config/config.properties`` and servectl's own
``serve_config/servectl.yaml`` (the listeners servectl starts beside TorchServe).

Reading has no side effects; rendering writes the effective config of one instance
(absolute paths, optional port and host overrides) into that instance's run folder.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator

from common.settings_file import Settings, load_section, read_yaml
from servectl.config import lifecycle
from servectl.config.lifecycle import Lifecycle
from servectl.config.paths import REPO as REPO  # callers import the paths from here too
from servectl.config.paths import SERVE_CONFIG as SERVE_CONFIG
from servectl.config.properties import read_properties, write_properties  # callers import them from here too

CONFIG_PROPERTIES = SERVE_CONFIG / "config.properties"
LOG_CONFIG = SERVE_CONFIG / "log4j2.xml"
SERVECTL_CONFIG = SERVE_CONFIG / "servectl.yaml"
ADDRESS_KEYS = {
    "inference": "inference_address",
    "management": "management_address",
    "metrics": "metrics_address",
}


def free_loopback_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 right now (held open together so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def parse(cls, address: str) -> Endpoint:
        parts = urlsplit(address)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"address {address!r}: expected http://host:port")
        return cls(parts.hostname, parts.port)


def _endpoint(value: Any) -> Any:
    return Endpoint.parse(value) if isinstance(value, str) else value


Address = Annotated[Endpoint, BeforeValidator(_endpoint)]


class ServectlConfig(Settings):
    """serve_config/servectl.yaml: where servectl's own listeners are (TorchServe never reads it)."""

    model_metrics_address: Address  # servectl.metrics.exporter's /metrics
    canary_proxy_address: Address  # servectl.release.canary's nginx

    @classmethod
    def load(cls, path: Path = SERVECTL_CONFIG, overlay: Path | None = None) -> ServectlConfig:
        """``overlay``: a YAML file whose keys replace ``path``'s (a container's bind addresses)."""
        base = load_section(cls, path)
        if overlay is None:
            return base
        return load_section(cls, overlay, document={**read_yaml(path), **read_yaml(overlay)})


@dataclass(frozen=True)
class ServeSettings:
    """One TorchServe instance: where its config, store and run files are, and its ports."""

    model_name: str
    inference: Endpoint
    management: Endpoint
    metrics: Endpoint
    properties: dict[str, str]
    model_metrics: Endpoint  # servectl.yaml's model_metrics_address
    canary_proxy: Endpoint  # servectl.yaml's canary_proxy_address
    lifecycle: Lifecycle  # serve_config/lifecycle.yaml
    model_store: Path = REPO / "model_store"
    run_dir: Path = REPO / ".run"
    log_config: Path = LOG_CONFIG

    @classmethod
    def load(
        cls,
        model_name: str,
        config: Path = CONFIG_PROPERTIES,
        overlay: Path | None = None,
        servectl_overlay: Path | None = None,
        **overrides: Any,
    ) -> ServeSettings:
        """``overlay``: a properties file whose keys replace the base file's (e.g. the
        container's bind addresses in serve_config/config.container.properties);
        ``servectl_overlay`` does the same for servectl.yaml (serve_config/servectl.container.yaml)."""
        props = read_properties(config)
        if overlay is not None:
            props.update(read_properties(overlay))
        own = ServectlConfig.load(overlay=servectl_overlay)
        settings = cls(
            model_name=model_name,
            inference=Endpoint.parse(props[ADDRESS_KEYS["inference"]]),
            management=Endpoint.parse(props[ADDRESS_KEYS["management"]]),
            metrics=Endpoint.parse(props[ADDRESS_KEYS["metrics"]]),
            model_metrics=own.model_metrics_address,
            canary_proxy=own.canary_proxy_address,
            lifecycle=lifecycle.load(),
            properties=props,
            model_store=(REPO / props.get("model_store", "model_store")).resolve(),
        )
        return replace(settings, **overrides)

    def with_ports(
        self,
        inference: int,
        management: int,
        metrics: int,
        host: str | None = None,
        grpc: tuple[int, int] | None = None,
        model_metrics: int | None = None,
    ) -> ServeSettings:
        """Other ports for this instance. TorchServe always starts its gRPC servers too (no
        switch turns them off), on fixed ports unless told otherwise, so a second instance
        would die on "Address already in use": without ``grpc`` two free loopback ports are
        picked for it. The same goes for the model-metrics exporter's port (``model_metrics``)."""

        def at(endpoint: Endpoint, port: int) -> Endpoint:
            return Endpoint(host or endpoint.host, port)

        picked = iter(free_loopback_ports((2 if grpc is None else 0) + (model_metrics is None)))
        grpc_inference, grpc_management = grpc or (next(picked), next(picked))
        exporter_port = model_metrics if model_metrics is not None else next(picked)
        return replace(
            self,
            inference=at(self.inference, inference),
            management=at(self.management, management),
            metrics=at(self.metrics, metrics),
            model_metrics=at(self.model_metrics, exporter_port),
            properties={
                **self.properties,
                "grpc_inference_port": str(grpc_inference),
                "grpc_management_port": str(grpc_management),
            },
        )

    def with_properties(self, **props: str) -> ServeSettings:
        """The same instance with some config.properties values overridden (e.g. token auth on).
        An address key moves its endpoint too: render() writes the endpoints, not these values."""
        def moved(name: str, key: str) -> Endpoint:
            current: Endpoint = getattr(self, name)
            return Endpoint.parse(props[key]) if key in props else current

        return replace(
            self,
            properties={**self.properties, **props},
            inference=moved("inference", ADDRESS_KEYS["inference"]),
            management=moved("management", ADDRESS_KEYS["management"]),
            metrics=moved("metrics", ADDRESS_KEYS["metrics"]),
        )

    @property
    def token_auth(self) -> bool:
        return self.properties.get("disable_token_authorization", "false").lower() != "true"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def multiproc_dir(self) -> Path:
        """Where the handler workers write their prometheus-client metrics (wiped at start)."""
        return self.run_dir / "prometheus_multiproc"

    @property
    def config_file(self) -> Path:
        """The rendered config.properties; its path on TorchServe's command line names the instance."""
        return (self.run_dir / "config.properties").resolve()

    @property
    def key_file(self) -> Path:
        """Where TorchServe writes its keys when token auth is on (its working directory)."""
        return self.run_dir / "key_file.json"

    @property
    def load_status_file(self) -> Path:
        """Where a handler that refuses the model says why (``common.load_status``)."""
        return (self.run_dir / "model_load_status.json").resolve()  # workers run elsewhere

    @property
    def mar(self) -> Path:
        return self.model_store / f"{self.model_name}.mar"

    def render(self) -> Path:
        """Write this instance's effective config.properties into its run folder."""
        props = dict(self.properties)
        props.pop("load_models", None)  # servectl names the model on the command line
        props["model_store"] = str(self.model_store)
        # registration (servectl.release.lifecycle) names a bare file of the store; a file:// URL may
        # name only a .mar directly in THIS instance's store, never another "model_store/"
        props["allowed_urls"] = f"file://{re.escape(str(self.model_store))}/[^/]+\\.mar"
        # TorchServe has no switch for workflows and loads any .war in their store (by default
        # the model store): give it an empty folder of this instance instead.
        workflow_store = self.run_dir / "no-workflows"
        workflow_store.mkdir(parents=True, exist_ok=True)
        props["workflow_store"] = str(workflow_store)
        props["metrics_config"] = str(
            (REPO / props.get("metrics_config", "serve_config/metrics.yaml")).resolve()
        )
        for name, key in ADDRESS_KEYS.items():
            props[key] = getattr(self, name).url
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_properties(self.config_file, props)
        return self.config_file
