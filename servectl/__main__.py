"""Command line for the server: ``python -m servectl {serve,start,stop,status,token,java}``.

serve   start in the foreground, wait until READY, stop cleanly on Ctrl-C
start   start in the background and return once the model is READY
stop    stop this project's server (and only it)
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import replace
from pathlib import Path

from servectl import server
from servectl.java import JavaError, find_java
from servectl.settings import ServeSettings


def banner(settings: ServeSettings, status: dict) -> str:
    token = server.keys(settings).get("inference")
    auth = f" -H 'Authorization: Bearer {token}'" if token else ""
    ready = server.ready_workers(status)
    url = f"{settings.inference.url}/predictions/{settings.model_name}"
    return (
        f"\n{settings.model_name} {status.get('modelVersion', '')} is READY "
        f"({ready} workers) at {url}\n"
        f"  try:  curl -s {url}{auth} -H 'Content-Type: application/json' "
        "-d @artifacts/example-request.json\n"
        f"  model card:  curl -s '{settings.management.url}/models/{settings.model_name}?customized=true'\n"
        f"  metrics:     {settings.metrics.url}/metrics (TorchServe), "
        f"{settings.model_metrics.url}/metrics (model: latency histograms, drift)\n"
        f"  logs:        {settings.log_dir}/\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="servectl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["serve", "start", "stop", "status", "token", "java"])
    parser.add_argument("--model", default="tabular_classifier", help="model name (= .mar name)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for READY")
    parser.add_argument("--run-dir", type=Path, help="instance folder for pid, logs, config (default .run)")
    parser.add_argument(
        "--ports",
        help="INFERENCE,MANAGEMENT,METRICS[,MODEL_METRICS] instead of config.properties "
        "(without MODEL_METRICS the exporter gets a free port)",
    )
    parser.add_argument(
        "--config-overlay", type=Path, help="properties file overriding config.properties keys (deployments)"
    )
    parser.add_argument("--ready", action="store_true", help="status: exit 1 unless minWorkers are READY")
    parser.add_argument("--model-store", type=Path, help="folder holding MODEL.mar (default model_store/)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config.properties key for this instance, e.g. disable_token_authorization=false",
    )
    args = parser.parse_args(argv)
    settings = ServeSettings.load(args.model, overlay=args.config_overlay)
    if args.run_dir:
        settings = replace(settings, run_dir=args.run_dir.resolve())
    if args.model_store:
        settings = replace(settings, model_store=args.model_store.resolve())
    if args.set:
        if not all("=" in item for item in args.set):
            parser.error("--set takes KEY=VALUE")
        settings = settings.with_properties(**dict(item.split("=", 1) for item in args.set))
    if args.ports:
        ports = [int(p) for p in args.ports.split(",")]
        if len(ports) not in (3, 4):
            parser.error("--ports takes INFERENCE,MANAGEMENT,METRICS[,MODEL_METRICS]")
        settings = settings.with_ports(*ports[:3], model_metrics=ports[3] if len(ports) == 4 else None)
    try:
        if args.command == "java":
            java = find_java(allow_install=True)
            print(f"java {java.version}: {java.executable}")
        elif args.command == "token":
            token = server.keys(settings).get("inference")
            if token:
                print(token)
        elif args.command == "status":
            status = server.model_status(settings)
            print(json.dumps(status, indent=2) if status else "not running")
            if args.ready:  # a health check: registered is not enough, the workers must be READY
                return 0 if server.is_ready(status) else 1
            return 0 if status else 1
        elif args.command == "stop":
            print("stopped" if server.stop(settings) else "no server of this project was running")
        elif args.command == "start":
            if server.running_pid(settings):
                raise server.ServeError("already running ('make stop' first)")
            settings.run_dir.mkdir(parents=True, exist_ok=True)
            with open(settings.run_dir / "torchserve.out", "ab") as log:
                proc = server.start(settings, stdout=log)
            try:
                status = server.wait_ready(settings, args.timeout, alive=lambda: proc.poll() is None)
            except server.ServeError:
                server.stop(settings)
                raise
            print(banner(settings, status))
        else:  # serve: foreground
            proc = server.start(settings)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            try:
                status = server.wait_ready(settings, args.timeout, alive=lambda: proc.poll() is None)
                print(banner(settings, status), flush=True)
                print("Ctrl-C stops the server.", flush=True)
                proc.wait()
            except KeyboardInterrupt:
                print("\nstopping...", flush=True)
            finally:
                server.stop(settings)
    except (server.ServeError, JavaError) as exc:
        print(f"servectl: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
