"""Pure parts of the benchmark harness: read wrk's output, compute ratios, render tables.

No I/O and no server here, so tests/unit checks them in milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from common.prometheus import metric_sums

WRK_MARK = "WRKJSON "


@dataclass(frozen=True)
class LoadResult:
    """One wrk run: what was sent, how fast, how slow at the tail, how many failed."""

    name: str
    connections: int
    requests: int
    seconds: float
    errors: int  # non-2xx/3xx answers + socket errors (connect, read, write, timeout)
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    rows_per_request: int = 1

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rps * self.rows_per_request

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rps"] = round(self.rps, 1)
        d["rows_per_s"] = round(self.rows_per_s, 1)
        return d


def parse_wrk(output: str, name: str, connections: int, rows_per_request: int = 1) -> LoadResult:
    """The LoadResult from the WRKJSON line our wrk.lua prints in done()."""
    for line in output.splitlines():
        if line.startswith(WRK_MARK):
            data = json.loads(line[len(WRK_MARK) :])
            break
    else:
        raise ValueError(f"no {WRK_MARK.strip()} line in wrk output:\n{output[-2000:]}")
    errors = sum(
        int(data[k])
        for k in ("errors_connect", "errors_read", "errors_write", "errors_status", "errors_timeout")
    )
    return LoadResult(
        name=name,
        connections=connections,
        requests=int(data["requests"]),
        seconds=int(data["duration_us"]) / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000,
        p95_ms=data["p95_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        rows_per_request=rows_per_request,
    )


TS_COUNTERS = ("ts_inference_requests_total", "ts_inference_latency_microseconds", "ts_queue_latency_microseconds")


def ts_counters(text: str) -> dict[str, float]:
    """Sum TorchServe's per-model request and latency counters from its Prometheus page."""
    return metric_sums(text, TS_COUNTERS)


def ts_split(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean ms per request TorchServe itself saw between two scrapes: in its job queue, and
    from the frontend's receipt to its answer (the worker's share is the difference)."""
    n = after["ts_inference_requests_total"] - before["ts_inference_requests_total"]
    if n <= 0:
        return {}
    queue = (after["ts_queue_latency_microseconds"] - before["ts_queue_latency_microseconds"]) / n / 1000
    total = (after["ts_inference_latency_microseconds"] - before["ts_inference_latency_microseconds"]) / n / 1000
    return {"ts_queue_ms": round(queue, 3), "ts_inference_ms": round(total, 3)}


def ratio(value: float, reference: float) -> float | None:
    return value / reference if reference > 0 else None


def fmt_ratio(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.0%}" if r < 10 else f"{r:.1f}x"


def fmt_num(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    return f"{x:,.0f}"


@dataclass(frozen=True)
class Target:
    """One acceptance target: a measured value, its threshold and whether it is met."""

    what: str
    value: str
    goal: str
    met: bool


# The table (issue 12): what each target compares, in the order the issue lists them
MEMORY_GOAL_MIB = 800
JSON_ROWS_GOAL, BINARY_ROWS_GOAL = 1e6, 2.5e6  # rows/s of 1,000-row requests
COLD_START_GOAL_S = 4.0


def targets(results: dict[str, Any]) -> list[Target]:
    """Check the issue's targets against one run's results (as built by ``full_run``); a
    measurement the run did not make (e.g. --no-peer) is left out, not faked."""
    out: list[Target] = []
    single = {r["connections"]: r for r in results["single"]}
    ping = {r["connections"]: r for r in results["ping"]}
    if 64 in single and 64 in ping:
        r = ratio(single[64]["rps"], ping[64]["rps"]) or 0.0
        p99, errors = single[64]["p99_ms"], single[64]["errors"]
        out.append(Target("single-row JSON @64 vs /ping @64", fmt_ratio(r), ">= 40%", r >= 0.40))
        out.append(Target("single-row JSON @64 p99, errors", f"{p99:.1f} ms, {errors}", "<= 20 ms, 0",
                          p99 <= 20 and errors == 0))
    if 1 in single and 1 in ping:
        p50 = single[1]["p50_ms"]
        out.append(Target("single-row JSON @1 p50 (/ping @1 p50)", f"{p50:.2f} ms ({ping[1]['p50_ms']:.2f} ms)",
                          "<= 1.0 ms", p50 <= 1.0))
    workers_cpu = single.get(64, {}).get("cpu_us_per_req_workers")
    if workers_cpu is not None:
        out.append(Target("worker CPU per single-row request @64", f"{workers_cpu:.0f} µs", "<= 80 µs",
                           workers_cpu <= 80))
    goals = {"json": ("1000-row JSON in, JSON out", JSON_ROWS_GOAL),
             "binary": ("1000-row .npy in, .npy out", BINARY_ROWS_GOAL)}
    for bulk in results["bulk"]:
        if bulk["format"] in goals:
            what, goal = goals[bulk["format"]]
            rows = bulk["rows_per_s"]
            out.append(Target(what, f"{fmt_num(rows)} rows/s", f">= {fmt_num(goal)}", rows >= goal))
    if results.get("memory"):
        total = sum(p["rss_mib"] for p in results["memory"])
        out.append(Target("resident memory, whole service", f"{total:.0f} MiB", f"<= {MEMORY_GOAL_MIB} MiB",
                          total <= MEMORY_GOAL_MIB))
    cold = results.get("cold_start_s")
    if cold is not None:
        out.append(Target("cold start to first prediction", f"{cold:.1f} s", f"<= {COLD_START_GOAL_S:g} s",
                          cold <= COLD_START_GOAL_S))
    score = results.get("score")
    if score:
        rate = score["rows_per_s"]
        out.append(Target(f"{fmt_num(score['rows'])}-row CSV scored by the client", f"{fmt_num(rate)} rows/s",
                          ">= 500k", rate >= 500_000))
    out += no_wait_targets(results)
    return out


def no_wait_targets(results: dict[str, Any]) -> list[Target]:
    """The targets a batch delay of 0 changes, measured on the same server after the shipped
    model (``bench.no_wait``): what a lone request gains, and what single-row throughput pays."""
    nowait = results.get("nowait")
    ping = {r["connections"]: r for r in results["ping"]}
    if not nowait or 64 not in ping:
        return []
    tag = "maxBatchDelay 0"
    lone, busy = nowait["lone"], nowait["busy"]
    r = ratio(busy["rps"], ping[64]["rps"]) or 0.0
    binary = nowait["binary"]["rows_per_s"]
    json_rows = nowait["json"]["rows_per_s"]
    json_goal, binary_goal = f">= {fmt_num(JSON_ROWS_GOAL)}", f">= {fmt_num(BINARY_ROWS_GOAL)}"
    return [
        Target(f"{tag}: single-row JSON @1 p50", f"{lone['p50_ms']:.2f} ms", "<= 1.0 ms", lone["p50_ms"] <= 1.0),
        Target(f"{tag}: single-row JSON @64 vs /ping @64", fmt_ratio(r), ">= 40%", r >= 0.40),
        Target(f"{tag}: 1000-row JSON in, JSON out", f"{fmt_num(json_rows)} rows/s", json_goal,
               json_rows >= JSON_ROWS_GOAL),
        Target(f"{tag}: 1000-row .npy in, .npy out", f"{fmt_num(binary)} rows/s", binary_goal,
               binary >= BINARY_ROWS_GOAL),
    ]


def cpu(r: dict[str, Any], role: str) -> str:
    """CPU microseconds per request of the frontend or of all workers, when measured."""
    v = r.get(f"cpu_us_per_req_{role}")
    return "" if v is None else f"{v:,.0f}"


BULK_LABELS = {
    "json": "JSON in, JSON rows out",
    "columnar": "JSON in, columnar JSON out",
    "npy": ".npy in, JSON rows out",
    "binary": ".npy in, .npy out",
}


def peer_markdown(results: dict[str, Any]) -> list[str]:
    """The client's file scoring, when the run measured it (the peers: benchmarks/compare.py)."""
    lines: list[str] = []
    score = results.get("score")
    if score:
        lines += [
            "",
            f"`python -m client score`: {fmt_num(score['rows'])} rows ({score['mib']:.0f} MiB of CSV) in "
            f"{score['seconds']:.1f} s, **{fmt_num(score['rows_per_s'])} rows/s** end to end "
            f"({score['connections']} connections, {fmt_num(score['chunk_rows'])}-row chunks, "
            f"{score['retries']} resent; client peak RSS {score['client_rss_mib']:.0f} MiB).",
        ]
        for where, run in (("On shared cores", score), ("With the server on one core and the client on the other",
                                                           score.get("pinned"))):
            service = (run or {}).get("service_csv")
            if run and service and "scoring_rows_per_s" in run:
                lines.append(
                    f"{where}: the client, after its imports and by its own clock, {run['scoring_seconds']:.2f} s, "
                    f"{fmt_num(run['scoring_rows_per_s'])} rows/s, using {run['client_cpu_s']:.2f} s of CPU; the "
                    f"service's rate for the same requests (its first chunk sent by wrk, {service['connections']} "
                    f"connections, Accept .npy) {fmt_num(service['rows_per_s'])} rows/s, "
                    f"p50 {service['p50_ms']:.1f} ms."
                )
    return lines


def no_wait_markdown(results: dict[str, Any]) -> list[str]:
    """The same .mar registered with maxBatchDelay 0, when the run measured it."""
    nowait = results.get("nowait")
    if not nowait:
        return []
    lone, busy = nowait["lone"], nowait["busy"]
    bulk = [("1000-row JSON in, JSON out", "json"), ("1000-row JSON in, columnar JSON out", "columnar"),
            ("1000-row .npy in, .npy out", "binary")]
    return [
        "",
        f"| same .mar, maxBatchDelay {nowait['max_batch_delay']} (registered through the management API) "
        "| req/s or rows/s | p50 ms | p99 ms | errors | CPU µs/req, all processes |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| single-row JSON, 1 connection | {fmt_num(lone['rps'])} req/s | {lone['p50_ms']:.2f} "
        f"| {lone['p99_ms']:.1f} | {lone['errors']} | |",
        f"| single-row JSON, 64 connections | {fmt_num(busy['rps'])} req/s | {busy['p50_ms']:.1f} "
        f"| {busy['p99_ms']:.1f} | {busy['errors']} | |",
        *(_bulk_row(label, nowait[key]) for label, key in bulk if key in nowait),  # runs before 12-07: no columnar
    ]


def _bulk_row(label: str, r: dict[str, Any]) -> str:
    cpu = f"{r['cpu_us']:,.0f}" if "cpu_us" in r else ""
    return (f"| {label} ({r['connections']} connections) | {fmt_num(r['rows_per_s'])} rows/s | {r['p50_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['errors']} | {cpu} |")


def markdown(results: dict[str, Any]) -> str:
    """The human table: every result next to its same-run reference and the ratio."""
    lines = []
    ping = {r["connections"]: r for r in results["ping"]}
    lines += [
        "| single-row JSON | req/s | p50 ms | p95 ms | p99 ms | errors | `/ping` req/s | ratio to `/ping` "
        "| frontend CPU µs/req | workers CPU µs/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["single"]:
        p = ping.get(r["connections"])
        ref = p["rps"] if p else 0.0
        lines.append(
            f"| {r['connections']} connections | {fmt_num(r['rps'])} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['errors']} | {fmt_num(ref)} | {fmt_ratio(ratio(r['rps'], ref))} "
            f"| {cpu(r, 'frontend')} | {cpu(r, 'workers')} |"
        )
    split = [r for r in results["single"] if "ts_inference_ms" in r]
    if split:
        lines += [
            "",
            "| single-row, where the time goes (means) | client p50 ms | TorchServe: receipt to answer ms "
            "| of which in its job queue ms | of which batch in the worker and back ms |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for r in split:
            lines.append(
                f"| {r['connections']} connections | {r['p50_ms']:.1f} | {r['ts_inference_ms']:.1f} "
                f"| {r['ts_queue_ms']:.1f} | {r['ts_inference_ms'] - r['ts_queue_ms']:.1f} |"
            )
    lines += [
        "",
        "| `/ping` (frontend ceiling) | req/s | p50 ms | p95 ms | p99 ms | errors | frontend CPU µs/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["ping"]:
        lines.append(
            f"| {r['connections']} connections | {fmt_num(r['rps'])} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['errors']} | {cpu(r, 'frontend')} |"
        )
    model = results["model"]
    lines += [
        "",
        "| bulk 1000-row requests | rows/s | req/s | p99 ms | errors | model in-process rows/s (1000-row calls) "
        "| ratio | handler in-process rows/s per core | frontend CPU µs/req | workers CPU µs/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for b in results["bulk"]:
        handler = model.get(f"handler_rows_per_s_bulk_{b['format']}")
        lines.append(
            f"| {BULK_LABELS.get(b['format'], b['format'])} ({b['connections']} connections) "
            f"| {fmt_num(b['rows_per_s'])} | {fmt_num(b['rps'])} "
            f"| {b['p99_ms']:.1f} | {b['errors']} | {fmt_num(model['rows_per_s_1000'])} "
            f"| {fmt_ratio(ratio(b['rows_per_s'], model['rows_per_s_1000']))} "
            f"| {'' if handler is None else fmt_num(handler)} "
            f"| {cpu(b, 'frontend')} | {cpu(b, 'workers')} |"
        )
    best_single = max((r["rps"] for r in results["single"]), default=0.0)
    lines += [
        "",
        "| model ceiling (scripted, in-process, 1 thread) | rows/s | served best single-row rows/s | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| 1-row calls | {fmt_num(model['rows_per_s_1'])} | {fmt_num(best_single)} "
        f"| {fmt_ratio(ratio(best_single, model['rows_per_s_1']))} |",
        f"| 1000-row calls | {fmt_num(model['rows_per_s_1000'])} | | |",
        f"| handler in-process per core, single-row JSON (parse, forward, encode; no TorchServe) "
        f"| {fmt_num(model.get('handler_rows_per_s_single_json', 0.0))} | | |",
        "",
        f"Cold start (process start to first successful prediction): **{results['cold_start_s']:.1f} s**; "
        f"all workers READY after {results['ready_s']:.1f} s.",
        "",
        "| process | resident memory |",
        "| --- | ---: |",
    ]
    for proc in results["memory"]:
        lines.append(f"| {proc['role']} (pid {proc['pid']}) | {proc['rss_mib']:.0f} MiB |")
    lines.append(f"| whole service | {sum(p['rss_mib'] for p in results['memory']):.0f} MiB |")
    lines += peer_markdown(results)
    lines += no_wait_markdown(results)
    lines += ["", "| target | measured | goal | met |", "| --- | ---: | ---: | :---: |"]
    for t in targets(results):
        lines.append(f"| {t.what} | {t.value} | {t.goal} | {'yes' if t.met else '**no**'} |")
    return "\n".join(lines) + "\n"


def best_setting(rows: list[dict[str, Any]], p99_budget_ms: float) -> dict[str, Any] | None:
    """The sweep row with the highest single-row throughput whose p99 fits the budget
    and that answered without errors; ties go to the better bulk throughput."""
    fits = [r for r in rows if r["errors"] == 0 and r["p99_ms"] <= p99_budget_ms]
    if not fits:
        return None
    return max(fits, key=lambda r: (r["rps"], r.get("bulk_rows_per_s", 0.0)))


def sweep_markdown(rows: list[dict[str, Any]], best: dict[str, Any] | None, budget: float) -> str:
    lines = [
        "| workers | batchSize | maxBatchDelay ms | single-row req/s @64 | p99 ms | ratio to `/ping` | errors "
        "| bulk JSON rows/s | CPU µs/req frontend + workers | lone request p50 ms (1 connection) "
        "| `/ping` p50 ms (1 connection) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        mark = " **best**" if best is r else ""
        lone = f"{r['lone_p50_ms']:.2f}" if "lone_p50_ms" in r else ""
        lone_ping = f"{r['ping_lone_p50_ms']:.2f}" if "ping_lone_p50_ms" in r else ""
        lines.append(
            f"| {r['workers']} | {r['batch_size']} | {r['max_batch_delay']} | {fmt_num(r['rps'])}{mark} "
            f"| {r['p99_ms']:.1f} | {fmt_ratio(ratio(r['rps'], r['ping_rps']))} | {r['errors']} "
            f"| {fmt_num(r.get('bulk_rows_per_s', 0.0))} | {cpu(r, 'frontend')} + {cpu(r, 'workers')} "
            f"| {lone} | {lone_ping} |"
        )
    verdict = (
        f"Best for p99 <= {budget:g} ms: workers={best['workers']}, batchSize={best['batch_size']}, "
        f"maxBatchDelay={best['max_batch_delay']}"
        if best
        else f"No setting met p99 <= {budget:g} ms without errors."
    )
    return "\n".join(lines) + "\n\n" + verdict + "\n"
