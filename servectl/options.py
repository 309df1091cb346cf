"""The options that say which instance a command means, shared by ``python -m servectl`` and
``python -m servectl.metrics.monitor`` (the Makefile passes the same SERVE_ARGS to both)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from servectl.config.settings import ServeSettings


def key_value(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise argparse.ArgumentTypeError("--set takes KEY=VALUE")
    key, value = item.split("=", 1)
    return key, value


def port_list(text: str) -> list[int]:
    try:
        ports = [int(p) for p in text.split(",")]
    except ValueError:
        ports = []
    if len(ports) not in (3, 4):
        raise argparse.ArgumentTypeError("--ports takes INFERENCE,MANAGEMENT,METRICS[,MODEL_METRICS]")
    return ports


def instance_options() -> argparse.ArgumentParser:
    """The options that say which instance, shared by every command but ``java``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--model", default="tabular_classifier", help="model name (= .mar name)")
    parent.add_argument("--run-dir", type=Path, help="instance folder for logs, keys, config (default .run)")
    parent.add_argument(
        "--ports",
        type=port_list,
        help="INFERENCE,MANAGEMENT,METRICS[,MODEL_METRICS] instead of config.properties "
        "(without MODEL_METRICS the exporter gets a free port)",
    )
    parent.add_argument(
        "--config-overlay", type=Path, help="properties file overriding config.properties keys (deployments)"
    )
    parent.add_argument(
        "--servectl-overlay", type=Path, help="YAML file overriding serve_config/servectl.yaml keys (deployments)"
    )
    parent.add_argument("--model-store", type=Path, help="folder holding MODEL.mar (default model_store/)")
    parent.add_argument(
        "--set",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config.properties key for this instance, e.g. disable_token_authorization=false",
    )
    return parent


def instance(args: argparse.Namespace) -> ServeSettings:
    """The settings the instance options describe."""
    settings = ServeSettings.load(args.model, overlay=args.config_overlay, servectl_overlay=args.servectl_overlay)
    if args.run_dir:
        settings = replace(settings, run_dir=args.run_dir.resolve())
    if args.model_store:
        settings = replace(settings, model_store=args.model_store.resolve())
    if args.set:
        settings = settings.with_properties(**dict(args.set))
    if args.ports:
        inference, management, metrics, *model_metrics = args.ports
        settings = settings.with_ports(inference, management, metrics, model_metrics=next(iter(model_metrics), None))
    return settings
