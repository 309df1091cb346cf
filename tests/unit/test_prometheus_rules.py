"""Every rule has a promtool unit test, the alerts cover what must page, and the dashboard
and docs/metrics.md cover every metric. Running promtool itself needs the Debian package
`prometheus`: that is tests/integration/test_promtool.py, not this tier."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from handlers.telemetry import PREFIX, Telemetry
from tests.conftest import REPO

SERVE_CONFIG = REPO / "serve_config"
RULES = sorted((SERVE_CONFIG / "rules").glob("*.yml"))
PROMTOOL_TESTS = sorted((Path(__file__).parent / "promtool").glob("*.yml"))  # run by tests/integration/test_promtool.py
DASHBOARDS = sorted((SERVE_CONFIG / "grafana" / "dashboards").glob("*.json"))


def rules(kind: str) -> dict[str, str]:
    """name -> expression of every alert ("alert") or recording ("record") rule."""
    found = {}
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if kind in rule:
                    found[rule[kind]] = rule["expr"]
    return found


def dashboard_exprs() -> list[str]:
    return [t["expr"] for d in DASHBOARDS for p in json.loads(d.read_text())["panels"] for t in p.get("targets", [])]


def test_every_rule_has_a_promtool_test():
    tests = [t for path in PROMTOOL_TESTS for t in yaml.safe_load(path.read_text())["tests"]]
    alerts_tested = {a["alertname"] for t in tests for a in t.get("alert_rule_test", []) if a["exp_alerts"]}
    assert set(rules("alert")) <= alerts_tested, "alerts without a test where they fire"
    exprs = " ".join(e["expr"] for t in tests for e in t.get("promql_expr_test", []))
    untested = [name for name in rules("record") if not re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", exprs)]
    assert not untested, f"recording rules no promql_expr_test reads: {untested}"


def test_alerts_cover_down_errors_latency_and_drift():
    alerts = rules("alert")
    assert any("up{" in e for e in alerts.values()) and any('status="READY"' in e for e in alerts.values())
    assert any("errors:ratio" in e for e in alerts.values())
    assert any("handler_seconds:p99" in e for e in alerts.values())
    assert any("out_of_range" in e for e in alerts.values())


def test_dashboard_shows_every_required_view_from_the_one_datasource():
    assert DASHBOARDS
    text = " ".join(dashboard_exprs())
    for needed in (
        f"{PREFIX}_requests_total",  # request rate, error ratio by status
        f"histogram_quantile(0.50, sum by (le) (rate({PREFIX}_handler_seconds_bucket",
        f"histogram_quantile(0.95, sum by (le) (rate({PREFIX}_handler_seconds_bucket",
        f"histogram_quantile(0.99, sum by (le) (rate({PREFIX}_handler_seconds_bucket",
        "ts_queue_latency_microseconds",
        f"{PREFIX}_batch_rows_bucket",
        f"{PREFIX}_predictions_total",
        f"{PREFIX}_feature_out_of_range_total",
        f"{PREFIX}_worker_cpu_seconds_total",
        f"{PREFIX}_worker_resident_memory_bytes",
    ):
        assert needed in text, needed
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            assert panel["datasource"]["uid"] == "prometheus" and panel["targets"], panel["title"]
            assert all(t["datasource"]["uid"] == "prometheus" for t in panel["targets"])
    provisioned = yaml.safe_load((SERVE_CONFIG / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert provisioned["datasources"][0]["uid"] == "prometheus"


def test_the_metrics_page_documents_every_metric():
    section = (REPO / "docs" / "metrics.md").read_text()
    from tests.unit.test_telemetry import card

    names = {family.name for family in Telemetry("m", "1", card(), batch_size=8, max_rows=100).registry.collect()}
    exporter_source = (REPO / "servectl/metrics/worker_metrics.py").read_text()
    names |= {f"{PREFIX}_{m}" for m in re.findall(r'f"\{PREFIX\}_([a-z_]+)"', exporter_source)}
    assert len(names) >= 14, names
    for name in names:
        assert name in section, f"{name} is not documented in docs/metrics.md"
    for alert in rules("alert"):
        assert alert in section, f"alert {alert} is not documented in docs/metrics.md"
