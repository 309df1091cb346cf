"""Run Prometheus against one servectl instance: ``python -m servectl.metrics.monitor`` (``make monitor``).

The scrape config, recording rules and alert rules are serve_config's; only the targets
(this instance's metrics ports), the rule paths and optionally the intervals change in the
copy written into the instance's run folder. The tests start Prometheus the same way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import yaml

from servectl.config.settings import SERVE_CONFIG, ServeSettings
from servectl.options import instance, instance_options

PROMETHEUS_CONFIG = SERVE_CONFIG / "prometheus.yml"
JOBS = {"torchserve": "metrics", "model_exporter": "model_metrics"}  # job -> ServeSettings endpoint


def render_config(settings: ServeSettings, out_dir: Path, interval: str | None = None) -> Path:
    """serve_config/prometheus.yml for this instance: the same jobs, intervals and rules, with
    absolute rule paths and file_sd target files holding this instance's metrics ports."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["rule_files"] = [str((PROMETHEUS_CONFIG.parent / rule).resolve()) for rule in config["rule_files"]]
    if interval:
        config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    targets_dir = out_dir / "targets"
    targets_dir.mkdir(parents=True, exist_ok=True)
    for job in config["scrape_configs"]:
        endpoint = getattr(settings, JOBS[job["job_name"]])
        host = "127.0.0.1" if endpoint.host in ("0.0.0.0", "::") else endpoint.host
        for sd in job["file_sd_configs"]:
            sd["files"] = [str(targets_dir / Path(f).name) for f in sd["files"]]
            for file in sd["files"]:
                Path(file).write_text(yaml.safe_dump([{"targets": [f"{host}:{endpoint.port}"]}]))
    path = out_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        raise SystemExit("prometheus is not installed: 'make prometheus' (apt-get install -y prometheus)")
    return found


def command(config: Path, data_dir: Path, listen: str) -> list[str]:
    return [
        prometheus_binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address={listen}",
        "--storage.tsdb.retention.time=2d",
        "--log.level=warn",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="servectl.metrics.monitor", description=__doc__.split("\n\n")[0], parents=[instance_options()]
    )
    parser.add_argument("--listen", default="127.0.0.1:9090", help="Prometheus's address")
    args, _ = parser.parse_known_args(argv)  # the rest of SERVE_ARGS (--timeout) is the server's business
    if args.ports and len(args.ports) != 4:
        parser.error("--ports: give all four (INFERENCE,MANAGEMENT,METRICS,MODEL_METRICS) to monitor")
    settings = instance(args)
    out = settings.run_dir / "prometheus"
    config = render_config(settings, out)
    print(
        f"Prometheus: http://{args.listen}  (scraping {settings.metrics.url} and {settings.model_metrics.url};"
        f" data in {out / 'data'})\n"
        f"  try:  http://{args.listen}/graph?g0.expr=model%3Atabular_handler_seconds%3Ap99_rate5m\n"
        f"  alerts: http://{args.listen}/alerts    Ctrl-C stops it.",
        flush=True,
    )
    cmd = command(config, out / "data", args.listen)
    os.execv(cmd[0], cmd)
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
