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
    Figure("bulk_json_cpu_us", "1,000-row JSON: CPU per request, all the system's processes", "µs", False),
    Figure("bulk_binary_cpu_us", "1,000-row binary: CPU per request, all the system's processes", "µs", False),
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
    if score:
        out += score_targets(score)
    return out


def score_targets(score: dict[str, Any]) -> list[Target]:
    """``client score`` against the service's rate for the same requests (wrk sending its
    chunks), each judged at 80%: on shared cores, where the client's CPU is taken from the
    server's, and with the client on a core of its own (``bench.pinned_apart``), as it runs on
    its own machine. The ratio to the bulk binary rate is shown, not judged: a CSV chunk costs
    the workers more than a .npy one, whoever sends it."""
    out: list[Target] = []
    binary = score.get("service_rows_per_s")
    for where, run in (("shared cores", score), ("the client on a core of its own", score.get("pinned"))):
        service = (run or {}).get("service_csv", {}).get("rows_per_s")
        if not run or not service:
            continue
        rate = run.get("scoring_rows_per_s", run["rows_per_s"])
        r = rate / service
        beside = f" ({rate / binary:.0%} of the bulk binary rate)" if binary and run is score else ""
        out.append(Target(f"client score (1M-row CSV) vs the service's rate for the same requests, {where}",
                          f"{r:.0%}{beside}", ">= 80%", r >= 0.8))
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


def cpu_budget_markdown(comparison: dict[str, Any], frontend_us: dict[str, float] | None = None,
                        nowait: dict[str, dict[str, float]] | None = None, service: str = SERVICE) -> list[str]:
    """Per bulk figure, what the service's measured CPU per request allows on these cores,
    against the fastest peer's measured rate: a ceiling below the peer's rate puts the goal out
    of reach by CPU alone; above it, the gap is time the service's processes spent waiting
    (the batch window, a worker idle while the other works), shown as the CPUs it kept busy.
    ``frontend_us``: the JVM's share per request (the full run's bulk table), which no peer
    spends: added to the peer's whole CPU per request, it is the service's cost with workers as
    lean as the peer, and its ceiling. ``nowait``: the same per figure with maxBatchDelay 0
    (``bench.no_wait``), where no worker waits for a batch to fill."""
    summary, cores = comparison["summary"], comparison["load"]["cpus"]
    rows = comparison.get("bulk_rows", 1000)
    lines: list[str] = []
    for what, rate_key, cpu_key in (("1,000-row JSON", "bulk_json_rows_per_s", "bulk_json_cpu_us"),
                                    ("1,000-row binary", "bulk_binary_rows_per_s", "bulk_binary_cpu_us")):
        cpu = summary["figures"].get(cpu_key, {}).get(service)
        rate = summary["figures"][rate_key].get(service)
        best = _best_peer(summary, rate_key, service)
        if not cpu or not rate or best is None:
            continue
        peer = best[0]
        peer_rate = summary["figures"][rate_key][peer]["median"]
        ceiling = cores * 1e6 / cpu["median"] * rows
        busy = cpu["median"] * rate["median"] / rows / 1e6
        if ceiling < peer_rate:
            verdict = "out of reach on these cores by CPU alone"
        elif rate["median"] >= peer_rate:
            verdict = "the service is ahead"
        else:
            verdict = "within the CPU budget: the gap is waiting, not work"
        line = (f"- {what}: the service's processes spend {fmt_num(cpu['median'])} µs of CPU per request, so "
                f"{cores} CPUs answer at most {fmt_num(ceiling)} rows/s; {peer} measured {fmt_num(peer_rate)}: "
                f"{verdict}. Measured {fmt_num(rate['median'])} rows/s, keeping {busy:.2f} of {cores} CPUs busy.")
        window_free = (nowait or {}).get(cpu_key)
        if window_free:
            rate0, cpu0 = window_free["rows_per_s"], window_free["cpu_us"]
            line += (f" Without the batch window (maxBatchDelay 0, same run): {fmt_num(rate0)} rows/s at "
                     f"{fmt_num(cpu0)} µs per request, {cpu0 * rate0 / rows / 1e6:.2f} of {cores} CPUs busy, "
                     f"at most {fmt_num(cores * 1e6 / cpu0 * rows)} rows/s.")
        jvm = (frontend_us or {}).get(cpu_key)
        peer_cpu = summary["figures"].get(cpu_key, {}).get(peer)
        if jvm and peer_cpu:
            lean = jvm + peer_cpu["median"]
            line += (f" The JVM alone spends {fmt_num(jvm)} µs per request; with workers as lean as {peer}'s whole "
                     f"process ({fmt_num(peer_cpu['median'])} µs), {fmt_num(lean)} µs per request allows at most "
                     f"{fmt_num(cores * 1e6 / lean * rows)} rows/s.")
        lines.append(line)
    return ["", "**CPU budget** (medians of the rounds):", "", *lines] if lines else []


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
        frontend = {f"bulk_{key}_cpu_us": b["cpu_us_per_req_frontend"] for b in results.get("bulk", [])
                    for fmt, key in (("columnar", "json"), ("binary", "binary"))
                    if b.get("format") == fmt and b.get("cpu_us_per_req_frontend")}
        # the JSON figure as the peers are compared on it: the columnar answer (runs before it had none)
        nowait = results.get("nowait") or {}
        windowless = {key: nowait[fmt] for fmt, key in (("binary", "bulk_binary_cpu_us"),
                                                         ("columnar", "bulk_json_cpu_us"))
                      if "cpu_us" in nowait.get(fmt, {})}
        lines += cpu_budget_markdown(comparison, frontend, windowless)
    lines += time_split_markdown(results)
    score = results.get("score")
    goals = peer_targets(comparison["summary"], score) if comparison else []
    if goals:
        lines += ["", "| goal (issue 21) | measured, median (range) of in-round ratios | goal | met |",
                  "| --- | ---: | ---: | :---: |"]
        lines += [f"| {t.what} | {t.value} | {t.goal} | {'yes' if t.met else '**no**'} |" for t in goals]
    return "\n".join(lines) + "\n" if lines else ""
