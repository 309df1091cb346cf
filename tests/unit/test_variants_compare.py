"""The pieces of `make variants` (benchmarks/variants.py) on the tiny model: every variant built
and archived, its quality row and in-process timing, the table. The served part runs through
make bench's harness, which tests/integration/test_variant_served.py exercises on a live server."""

from __future__ import annotations

import zipfile

import pytest

from benchmarks import variants as compare
from common.model_card import VARIANTS


@pytest.fixture(scope="module")
def built(tiny_artifacts, tmp_path_factory):
    return compare.build_all(tiny_artifacts, tmp_path_factory.mktemp("variants"), "tiny", "0.1")


def test_every_variant_is_built_and_archived_with_its_own_file(built):
    assert [b.name for b in built] == list(VARIANTS)
    for b in built:
        names = zipfile.ZipFile(b.mar).namelist()
        assert b.card.model_file in names and "metadata.json" in names and "report.md" in names


def test_the_quality_row_of_each_variant(built):
    for b in built:
        q = compare.quality(b)
        assert 0 <= q["max_probability_diff"] <= q["tolerance"]
        assert q["accuracy"] == b.card.metrics["test"]["accuracy"] and q["runtime"] == b.card.runtime
        assert q["model_file_bytes"] > 0 and q["explanations"] == VARIANTS[b.name].autograd


def test_in_process_timing_and_the_table(built):
    rows = {b.name: compare.quality(b) | compare.in_process(b, 0.05) for b in built}
    for r in rows.values():
        assert r["ms_per_call_1"] > 0 and r["ms_per_call_1000"] > 0 and r["load_ms"] > 0
        r |= {"single_rps": 1.0, "bulk_rows_per_s": 1.0, "first_answer_s": 1.0, "worker_rss_mib": 1.0}
    machine = {"cores": 2, "cpu": "cpu", "torch": "2.13.0", "note": ""}
    table = compare.markdown({"when": "now", "machine": machine, "duration_s": 1, "variants": rows})
    assert [line.split("|")[1].strip() for line in table.splitlines()[4:]] == list(VARIANTS)
    assert "no (400)" in table
