"""Pure parts of the peer comparison (``make bench``): medians and spreads over rounds, same-run
ratios of the service to each peer, the goals of issue 21, the table. No I/O, so tests/unit
checks them in milliseconds (tests/unit/test_bench_compare.py).

A round measures every figure of every system back to back; each ratio is taken inside its
round (service ÷ peer, same minutes, same load), and the median of those ratios is reported with
their range, beside each system's median figure and its range.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from benchmarks.report import Target, fmt_num

SERVICE = "TorchServe (this project)"
LONE_P50_GOAL = 1.5  # a lone request's p50, at most this many times the fastest peer's


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool


# what each round measures, per system, in this order
FIGURES = (
    Figure("single_rps", "single-row JSON, 64 connections", "req/s", True),
    Figure("single_p50_ms", "single-row JSON, 64 connections, p50", "ms", False),
    Figure("single_p99_ms", "single-row JSON, 64 connections, p99", "ms", False),
    Figure("lone_p50_ms", "a lone request (1 connection), p50", "ms", False),
    Figure("bulk_json_rows_per_s", "1,000-row JSON, 8 connections", "rows/s", True),
    Figure("bulk_binary_rows_per_s", "1,000-row binary (.npy / v2 binary), 8 connections", "rows/s", True),
)
BY_KEY = {f.key: f for f in FIGURES}


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min and max of the rounds' values (empty: nothing measured)."""
    if not values:
        return {}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": list(values)}


def summarise(rounds: list[dict[str, dict[str, float]]], service: str = SERVICE) -> dict[str, Any]:
    """``rounds``: per round, per system, the figures measured (a figure a system cannot be
    measured on is absent). Returns per figure and system the spread of its values, and per
    figure and peer the spread of the in-round ratios service ÷ peer."""
    systems = list(dict.fromkeys(name for r in rounds for name in r))
    figures: dict[str, dict[str, Any]] = {}
    ratios: dict[str, dict[str, Any]] = {}
    for fig in FIGURES:
        figures[fig.key] = {s: spread([r[s][fig.key] for r in rounds if fig.key in r.get(s, {})]) for s in systems}
        ratios[fig.key] = {}
        for peer in systems:
            if peer == service:
                continue
            pairs = [
                r[service][fig.key] / r[peer][fig.key]
                for r in rounds
                if fig.key in r.get(service, {}) and fig.key in r.get(peer, {}) and r[peer][fig.key] > 0
            ]
            ratios[fig.key][peer] = spread(pairs)
    return {"systems": systems, "figures": figures, "ratios": ratios, "rounds": len(rounds)}


def _best_peer(summary: dict[str, Any], key: str, service: str) -> tuple[str, dict[str, Any]] | None:
    """The peer with the best median figure, and its ratio's spread."""
    fig = BY_KEY[key]
    peers = [(p, s) for p, s in summary["figures"][key].items() if p != service and s]
    if not peers:
        return None
    name = (max if fig.higher_is_better else min)(peers, key=lambda ps: ps[1]["median"])[0]
    return name, summary["ratios"][key].get(name, {})


def peer_targets(summary: dict[str, Any], score: dict[str, Any] | None = None, service: str = SERVICE,
                 ) -> list[Target]:
    """Issue 21's goals, each judged on the median in-round ratio against the strongest peer."""
    out: list[Target] = []
    for key, what in (
        ("single_rps", "single-row throughput @64 vs the fastest peer"),
        ("bulk_json_rows_per_s", "1,000-row JSON vs the fastest peer"),
        ("lone_p50_ms", "lone-request p50 vs the fastest peer's"),
        ("bulk_binary_rows_per_s", "bulk binary vs the fastest peer"),
    ):
        best = _best_peer(summary, key, service)
        if best is None or not best[1]:
            continue
        peer, r = best
        value = f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f}) vs {peer}"
        if BY_KEY[key].higher_is_better:  # ahead: more per second than the fastest peer
            out.append(Target(what, value, "> 1.0x", r["median"] > 1.0))
        else:  # within 1.5x of the fastest peer's latency
            out.append(Target(what, value, "<= 1.5x", r["median"] <= LONE_P50_GOAL))
    if score and score.get("service_rows_per_s"):
        r = score["rows_per_s"] / score["service_rows_per_s"]
        out.append(Target("client score (1M-row CSV) vs the service's bulk binary rate", f"{r:.0%}", ">= 80%",
                          r >= 0.8))
    return out


def _cell(s: dict[str, Any], unit: str) -> str:
    if not s:
        return "n/a"
    if unit == "ms":
        return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"
    return f"{fmt_num(s['median'])} ({fmt_num(s['min'])}-{fmt_num(s['max'])})"


def _ratio_cell(s: dict[str, Any]) -> str:
    return "n/a" if not s else f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"


def comparison_markdown(comparison: dict[str, Any], service: str = SERVICE) -> list[str]:
    """The figures table (median and range per system), the ratios table (service ÷ peer,
    median and range of the in-round ratios), the peers left out and why, the machine's load."""
    summary = comparison["summary"]
    systems = summary["systems"]
    peers = [s for s in systems if s != service]
    load = comparison["load"]
    lines = [
        "",
        f"**Against the peers** ({summary['rounds']} rounds of every figure on every system, back to back; "
        f"median (min-max); {load['cpus']} CPUs, load average {load['before']} before, {load['after']} after):",
        "",
        "| figure | " + " | ".join(systems) + " |",
        "| --- |" + " ---: |" * len(systems),
    ]
    for fig in FIGURES:
        cells = [_cell(summary["figures"][fig.key].get(s, {}), fig.unit) for s in systems]
        lines.append(f"| {fig.label} ({fig.unit}) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| service ÷ peer, in-round ratios (> 1: the service is ahead on throughput; on latency < 1 is ahead) | "
        + " | ".join(peers) + " |",
        "| --- |" + " ---: |" * len(peers),
    ]
    for fig in FIGURES:
        cells = [_ratio_cell(summary["ratios"][fig.key].get(p, {})) for p in peers]
        lines.append(f"| {fig.label} | " + " | ".join(cells) + " |")
    for name, why in comparison.get("unavailable", {}).items():
        lines.append(f"\n{name}: not measured: {why}")
    for name, notes in comparison.get("notes", {}).items():
        lines.append(f"\n{name}: {notes}")
    return lines


def time_split_markdown(results: dict[str, Any]) -> list[str]:
    """Where a single-row request's time goes, per connection count, from the service's own
    counters over the same load: the client's p50, /ping's p50 (HTTP and Netty, no worker),
    TorchServe's receipt-to-answer and job-queue means (ts_inference_latency, ts_queue_latency),
    the handler's own time per batch (handler_seconds), and what is left: the frontend's hand-off
    to the worker and back, TorchServe's Python around the handler."""
    ping = {r["connections"]: r for r in results.get("ping", [])}
    rows = [r for r in results.get("single", []) if "handler_ms_per_batch" in r]
    if not rows:
        return []
    lines = [
        "",
        "| single-row, where the time goes (means, ms) | client p50 | `/ping` p50 | TorchServe receipt to answer "
        "| of which job queue (batch delay, waiting for a worker) | of which the handler (per batch) "
        "| of which the rest: frontend to worker and back, TorchServe's worker Python | requests per batch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        p50 = ping.get(r["connections"], {}).get("p50_ms")
        rest = r["ts_inference_ms"] - r["ts_queue_ms"] - r["handler_ms_per_batch"]
        lines.append(
            f"| {r['connections']} connections | {r['p50_ms']:.2f} | {'' if p50 is None else f'{p50:.2f}'} "
            f"| {r['ts_inference_ms']:.2f} | {r['ts_queue_ms']:.2f} | {r['handler_ms_per_batch']:.3f} "
            f"| {rest:.2f} | {r['requests_per_batch']:g} |"
        )
    return lines


def compare_markdown(results: dict[str, Any]) -> str:
    """The peers' tables, the time split, the client's rate beside the service's, their goals."""
    comparison = results.get("comparison")
    lines: list[str] = []
    if comparison:
        lines += comparison_markdown(comparison)
        tuning = comparison.get("tuning", {})
        if tuning:
            lines += ["", "| peer | tuning (the service's workers and batch settings) |", "| --- | --- |"]
            lines += [f"| {name} | {how} |" for name, how in tuning.items()]
    lines += time_split_markdown(results)
    score = results.get("score")
    if score and score.get("service_rows_per_s"):
        lines += ["", f"`python -m client score` {fmt_num(score['rows_per_s'])} rows/s end to end; the service's "
                      f"bulk binary {fmt_num(score['service_rows_per_s'])} rows/s in the same run: "
                      f"**{score['rows_per_s'] / score['service_rows_per_s']:.0%}**."]
    goals = peer_targets(comparison["summary"], score) if comparison else []
    if goals:
        lines += ["", "| goal (issue 21) | measured, median (range) of in-round ratios | goal | met |",
                  "| --- | ---: | ---: | :---: |"]
        lines += [f"| {t.what} | {t.value} | {t.goal} | {'yes' if t.met else '**no**'} |" for t in goals]
    return "\n".join(lines) + "\n" if lines else ""
