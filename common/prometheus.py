"""Prometheus text pages parsed and summed in one place, with prometheus_client's parser.

The benchmarks (TorchServe's counters before and after a run), the lifecycle (a version's
request count while it drains) and the watcher (each version's answers, 5xx, handler-time
buckets and predicted classes) all need "this metric, summed over the samples whose labels
match, perhaps kept apart by some label". The parser reports a counter's samples as
``<name>_total`` whether or not the page spells the suffix (TorchServe's ``Requests5XX`` does
not), so a name matches its samples with or without it. A malformed page raises ValueError.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text page (ValueError when it is not one)."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _aliases(name: str) -> tuple[str, str]:
    return name, f"{name}_total"


def _matches(sample: Sample, where: Mapping[str, str]) -> bool:
    return all(sample.labels.get(label) == value for label, value in where.items())


def sum_by(
    parsed: Iterable[Sample], name: str, by: tuple[str, ...] = (), where: Mapping[str, str] | None = None
) -> dict[tuple[str, ...], float]:
    """``name``'s samples whose labels equal ``where``'s, summed per value tuple of the ``by``
    labels (a sample lacking one of them is left out; ``by=()`` sums all into the key ())."""
    sums: dict[tuple[str, ...], float] = defaultdict(float)
    aliases = _aliases(name)
    for sample in parsed:
        if sample.name in aliases and _matches(sample, where or {}) and all(label in sample.labels for label in by):
            sums[tuple(sample.labels[label] for label in by)] += sample.value
    return dict(sums)


def metric_sums(text: str, names: Iterable[str], where: Mapping[str, str] | None = None) -> dict[str, float]:
    """Each named metric of a Prometheus text page, summed over its samples whose labels equal
    ``where``'s (all of them by default); 0 when absent."""
    parsed = samples(text)
    return {name: sum_by(parsed, name, where=where).get((), 0.0) for name in dict.fromkeys(names)}
