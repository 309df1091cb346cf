"""common.prometheus: the one parser and summer of Prometheus text pages (benchmarks, the
lifecycle's drain, the watcher)."""

from __future__ import annotations

import pytest

from common.prometheus import metric_sums, samples, sum_by

pytestmark = pytest.mark.unit

PAGE = """# TYPE tabular_requests counter
tabular_requests_total{model_name="m",model_version="1.0",code="200"} 90.0
tabular_requests_total{model_name="m",model_version="1.0",code="503"} 2.0
tabular_requests_total{model_name="m",model_version="1.1",code="500"} 5.0
tabular_requests_total{model_name="other",model_version="1.0",code="200"} 1000.0
tabular_requests_total{model_name="m",code="200"} 7.0
# HELP Requests5XX Requests answered with a 5xx.
# TYPE Requests5XX counter
Requests5XX{Level="Host"} 3.0
"""


def test_sums_filter_on_labels_and_read_a_counter_with_or_without_its_suffix():
    assert metric_sums(PAGE, ["tabular_requests_total", "Requests5XX", "absent"]) == {
        "tabular_requests_total": 1104.0, "Requests5XX": 3.0, "absent": 0.0,
    }  # fmt: skip
    where = {"model_name": "m", "model_version": "1.0"}
    assert metric_sums(PAGE, ["tabular_requests_total"], where) == {"tabular_requests_total": 92.0}


def test_sum_by_keeps_label_values_apart_and_skips_samples_without_them():
    by = sum_by(samples(PAGE), "tabular_requests_total", ("model_version", "code"), {"model_name": "m"})
    assert by == {("1.0", "200"): 90.0, ("1.0", "503"): 2.0, ("1.1", "500"): 5.0}


def test_a_page_that_is_not_prometheus_text_raises_value_error():
    with pytest.raises(ValueError):
        samples("tabular_requests_total{model_name=\"m\" 1\n")
