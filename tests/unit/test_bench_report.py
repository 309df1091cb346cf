"""The benchmark harness's pure parts: reading wrk's output, ratios, targets, tables."""

from __future__ import annotations

import json

import pytest

from benchmarks.report import (
    best_setting,
    fmt_ratio,
    markdown,
    metric_sums,
    parse_wrk,
    ratio,
    sweep_markdown,
    targets,
    ts_counters,
    ts_split,
)

WRK_OUT = """Running 10s test @ http://127.0.0.1:9/predictions/m
  2 threads and 64 connections
  Non-2xx or 3xx responses: 3
WRKJSON {"requests":20000,"duration_us":10000000,"bytes":1,"errors_connect":1,"errors_read":2,"errors_write":0,"errors_status":3,"errors_timeout":4,"latency_mean_us":3000.0,"p50_us":2500,"p90_us":5000,"p95_us":6000,"p99_us":9500,"max_us":20000}
"""


def test_parse_wrk_reads_the_json_line_and_sums_every_kind_of_error():
    r = parse_wrk(WRK_OUT, "single", 64, rows_per_request=1000)
    assert r.rps == pytest.approx(2000.0)
    assert r.rows_per_s == pytest.approx(2_000_000.0)
    assert r.errors == 1 + 2 + 3 + 4
    assert (r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms) == (2.5, 6.0, 9.5, 20.0)
    assert json.loads(json.dumps(r.to_dict()))["rps"] == 2000.0


def test_parse_wrk_without_the_json_line_says_so():
    with pytest.raises(ValueError, match="no WRKJSON line"):
        parse_wrk("unable to connect to 127.0.0.1:9", "single", 1)


def test_ratio_and_its_format():
    assert ratio(50, 200) == 0.25 and ratio(1, 0) is None
    assert fmt_ratio(0.254) == "25%" and fmt_ratio(None) == "n/a" and fmt_ratio(12.0) == "12.0x"


def run(single_rps: float, p99: float, json_rows: float, npy_rows: float, cold: float) -> dict:
    def load(c: int, rps: float, p99_ms: float = 1.0) -> dict:
        return {"connections": c, "rps": rps, "p50_ms": 1.0, "p95_ms": 1.0, "p99_ms": p99_ms, "errors": 0}

    return {
        "single": [load(1, 100.0), load(64, single_rps, p99)],
        "ping": [load(1, 1000.0), load(64, 10_000.0)],
        "bulk": [
            load(8, json_rows / 1000) | {"format": "json", "rows_per_s": json_rows},
            load(8, npy_rows / 1000) | {"format": "binary", "rows_per_s": npy_rows},
        ],
        "model": {"rows_per_s_1": 30_000.0, "rows_per_s_1000": 5_000_000.0},
        "cold_start_s": cold,
        "ready_s": cold + 0.5,
        "memory": [{"role": "frontend (Java)", "pid": 1, "rss_mib": 300.0}],
    }


def test_targets_follow_the_issue_thresholds():
    met = {t.what: t.met for t in targets(run(4000, 20.0, 1_000_000, 2_500_000, 4.0))}
    assert all(met.values()) and len(met) == 7, met
    missed = {t.what for t in targets(run(3999, 20.1, 999_999, 2_499_999, 4.1)) if not t.met}
    assert missed == {
        "single-row JSON @64 vs /ping @64", "single-row JSON @64 p99, errors", "1000-row JSON in, JSON out",
        "1000-row .npy in, .npy out", "cold start to first prediction",
    }


def test_the_score_and_cpu_targets_appear_when_measured():
    results = run(4000, 20.0, 1_000_000, 2_500_000, 4.0)
    results["single"][1]["cpu_us_per_req_workers"] = 81.0
    results["score"] = {"rows": 1_000_000, "seconds": 2.0, "rows_per_s": 500_000.0, "mib": 80.0,
                        "connections": 4, "chunk_rows": 5000, "retries": 0, "client_rss_mib": 90.0}
    met = {t.what: t.met for t in targets(results)}
    assert met["worker CPU per single-row request @64"] is False
    assert met["1.00M-row CSV scored by the client"]
    table = markdown(results)
    assert "**500k rows/s** end to end" in table


def test_the_no_wait_registration_is_judged_against_the_same_targets_and_the_same_ping():
    """bench.no_wait's results: the same thresholds, the ratio against this run's /ping @64."""

    def load(c: int, rps: float, p50: float = 1.0, rows: float | None = None) -> dict:
        return {"connections": c, "rps": rps, "p50_ms": p50, "p99_ms": 2.0, "errors": 0,
                "rows_per_s": rps if rows is None else rows}

    results = run(4000, 20.0, 1_000_000, 2_500_000, 4.0)
    results["nowait"] = {"max_batch_delay": 0, "batch_size": 64, "lone": load(1, 2000, p50=0.46),
                         "busy": load(64, 1600), "json": load(8, 900, rows=900_000),
                         "binary": load(8, 3700, rows=3_700_000)}
    met = {t.what: (t.value, t.met) for t in targets(results)}
    assert met["maxBatchDelay 0: single-row JSON @1 p50"] == ("0.46 ms", True)
    assert met["maxBatchDelay 0: single-row JSON @64 vs /ping @64"] == ("16%", False)  # 1,600 of 10,000
    assert met["maxBatchDelay 0: 1000-row JSON in, JSON out"] == ("900k rows/s", False)
    assert met["maxBatchDelay 0: 1000-row .npy in, .npy out"] == ("3.70M rows/s", True)
    table = markdown(results)
    assert "| single-row JSON, 1 connection | 2,000 req/s | 0.46 |" in table
    assert "columnar JSON out" not in table  # runs before it measured none
    results["nowait"]["columnar"] = load(8, 1200, rows=1_200_000) | {"cpu_us": 1500.0}
    assert "| 1000-row JSON in, columnar JSON out (8 connections) | 1.20M rows/s | 1.0 | 2.0 | 0 | 1,500 |" \
        in markdown(results)
    assert not any(t.what.startswith("maxBatchDelay 0") for t in targets(run(4000, 20.0, 1e6, 2.5e6, 4.0)))


def test_markdown_puts_each_result_next_to_its_reference_and_ratio():
    table = markdown(run(4000, 20.0, 1_000_000, 2_500_000, 4.0))
    assert "| 64 connections | 4,000 |" in table and "| 10k | 40% |" in table
    assert "| 1.00M |" in table and "| 20% |" in table  # 1M of the model's 5M rows/s
    assert "**4.0 s**" in table and "**no**" not in table


def test_best_setting_is_the_fastest_within_the_budget_without_errors():
    rows = [
        {"workers": 1, "batch_size": 1, "max_batch_delay": 0, "rps": 900.0, "p99_ms": 10.0, "errors": 0},
        {"workers": 2, "batch_size": 8, "max_batch_delay": 0, "rps": 2000.0, "p99_ms": 20.0, "errors": 0},
        {"workers": 2, "batch_size": 32, "max_batch_delay": 5, "rps": 3000.0, "p99_ms": 40.0, "errors": 0},
        {"workers": 1, "batch_size": 32, "max_batch_delay": 5, "rps": 2500.0, "p99_ms": 15.0, "errors": 7},
    ]
    for r in rows:
        r["ping_rps"] = 10_000.0
    best = best_setting(rows, 25.0)
    assert best is rows[1]
    assert "**best**" in sweep_markdown(rows, best, 25.0)
    assert best_setting(rows, 5.0) is None
    assert "No setting met" in sweep_markdown(rows, None, 5.0)


def test_torchserve_counters_give_the_mean_queue_and_total_time_per_request():
    page = """# HELP ts_inference_requests_total Total number of inference requests.
ts_inference_requests_total{model_name="m",model_version="default",hostname="h",} 100.0
ts_inference_latency_microseconds{model_name="m",model_version="default",hostname="h",} 1000000.0
ts_queue_latency_microseconds{model_name="m",model_version="default",hostname="h",} 250000.0
Requests2XX{Level="Host",Hostname="h",} 100.0
"""
    before = ts_counters(page)
    after = ts_counters(page.replace(" 100.0\nts_inf", " 300.0\nts_inf").replace("1000000.0", "5000000.0")
                        .replace("250000.0", "1250000.0"))
    assert before["ts_inference_requests_total"] == 100.0
    assert ts_split(before, after) == {"ts_queue_ms": 5.0, "ts_inference_ms": 20.0}
    assert ts_split(before, before) == {}


def test_metric_sums_reads_typed_counters_with_and_without_the_total_suffix():
    page = """# HELP Requests5XX Requests answered with a 5xx.
# TYPE Requests5XX counter
Requests5XX{Level="Host",Hostname="h",} 3.0
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{model_name="a",model_version="default",hostname="h",} 100.0
ts_inference_requests_total{model_name="b",model_version="default",hostname="h",} 1.0
# TYPE QueueTime gauge
QueueTime{Level="Host",Hostname="h",} 7.0
"""
    names = ["Requests5XX", "ts_inference_requests_total", "QueueTime", "Requests4XX"]
    assert metric_sums(page, names) == {
        "Requests5XX": 3.0, "ts_inference_requests_total": 101.0, "QueueTime": 7.0, "Requests4XX": 0.0,
    }  # fmt: skip
