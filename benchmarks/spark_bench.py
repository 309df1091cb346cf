"""Rows/s of offline scoring on Spark beside the other ways to score a file, in the same run.

    python -m benchmarks.spark_bench              # 1M rows (make bench-spark)
    python -m benchmarks.spark_bench --rows 100000 --note 'quiet machine'

One generated table (the model card's mean and std, seeded), scored three ways one after the
other, never two at once:

- in-process: the Spark job's own per-batch work (``offline.spark.answers`` over the service's
  parser and ``locate``) on one thread, batch after batch, with no Spark: the floor under the job;
- ``python -m client score`` against a TorchServe started from the real .mar (``benchmarks.bench``'s
  ``serving`` and ``score_a_file``): the same rows as CSV through HTTP;
- ``offline.spark`` on local[*] (every core): the rows as Parquet and as CSV, from reading the
  input to the written output and its summary; the session's start is timed apart.

The machine's load average is printed at the start and the end: on a shared machine the ratios
mean more than the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench import make_payloads, say, score_a_file, serving
from common.model_card import ModelCard
from handlers.contract.columns import locate, rows_from_columns
from offline import archive
from offline.spark import BATCH_ROWS, DEFAULT_MAR, answers

HERE = Path(__file__).resolve().parent


def table(card: ModelCard, n_rows: int, seed: int = 1) -> np.ndarray:
    """float32 rows around the training data (as score_a_file's CSV is made)."""
    rng = np.random.default_rng(seed)
    mean, std = np.array(card.normalisation["mean"]), np.array(card.normalisation["std"])
    return (mean + std * rng.standard_normal((n_rows, card.n_features))).astype(np.float32)


def in_process(mar: Path, x: np.ndarray) -> dict[str, float]:
    """The job's per-batch work on one thread, without Spark."""
    torch.set_num_threads(1)
    model = archive.load(mar)
    schema = model.archive.schema(BATCH_ROWS)

    def parse(part: np.ndarray) -> torch.Tensor:
        return rows_from_columns(list(part.T), schema)

    started = time.perf_counter()
    for start in range(0, len(x), BATCH_ROWS):
        answers(locate(x[start:start + BATCH_ROWS].astype(np.float64), parse, schema.n_features),
                model.runtime, model.archive.card.class_names)
    seconds = time.perf_counter() - started
    return {"rows": len(x), "seconds": seconds, "rows_per_s": len(x) / seconds}


def on_spark(mar: Path, x: np.ndarray, card: ModelCard, folder: Path, master: str) -> dict[str, Any]:
    """Each input format once, after an uncounted warm-up job over as many partitions as the
    session has cores (the first task on each core starts a Python worker, which imports torch
    and loads the model: seconds that belong to no table's size). Parquet is written in 8 row groups, the units
    Spark splits a Parquet file into, so every core gets work, as CSV gets by byte ranges."""
    import pandas as pd

    from offline.spark import run, session

    frame = pd.DataFrame(x, columns=list(card.feature_names))
    frame.iloc[:1000].to_parquet(folder / "warm.parquet")
    frame.to_parquet(folder / "rows.parquet", row_group_size=max(1, len(x) // 8))
    frame.to_csv(folder / "rows.csv", index=False)
    started = time.perf_counter()
    spark = session(master, app="spark-bench")
    spark.sparkContext.setLogLevel("ERROR")
    out: dict[str, Any] = {"master": master, "session_start_s": time.perf_counter() - started}
    try:
        warm = run(spark, str(folder / "warm.parquet"), str(folder / "warm-out.parquet"), mar,
                   partitions=spark.sparkContext.defaultParallelism)
        out["warm_up_s"] = warm["seconds"]
        for name in ("parquet", "csv"):
            say(f"spark-bench: offline.spark on {master}, {len(x):,} rows of {name}")
            out[name] = run(spark, str(folder / f"rows.{name}"), str(folder / f"scored-{name}.parquet"), mar)
    finally:
        spark.stop()
    return out


def markdown(result: dict[str, Any]) -> str:
    spark = result["spark"]
    measured = [
        ("in-process, the job's batch work on 1 thread", result["in_process"]),
        (f"`python -m client score` (CSV over HTTP, {result['client_score']['connections']} connections)",
         result["client_score"]),
        *((f"`offline.spark` on {spark['master']}, {name} in", spark[name]) for name in ("parquet", "csv")),
    ]
    head = (f"Run at {result['when']} on {result['cores']} cores, load average {result['load_start']} at the "
            f"start and {result['load_end']} at the end. {result['note']}").rstrip()
    rows = [f"| {what} | {r['rows_per_s']:,.0f} | {r['seconds']:.1f} |" for what, r in measured]
    split = ", ".join(f"{name} {spark[name]['read_and_number_s']:.1f} s" for name in ("parquet", "csv"))
    return "\n".join([head, "", f"| {result['rows']:,} rows | rows/s | seconds |", "| --- | ---: | ---: |", *rows,
                      "", f"Of the Spark seconds, reading and numbering the rows (the count per partition): {split}. "
                      f"Spark session start {spark['session_start_s']:.1f} s and a 1,000-row warm-up job "
                      f"{spark['warm_up_s']:.1f} s, not counted above."]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.spark_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--mar", type=Path, default=DEFAULT_MAR)
    p.add_argument("--master", default="local[*]")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--note", default="", help="conditions to state with the results")
    args = p.parse_args(argv)
    card = archive.read(args.mar).card
    result: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": args.rows,
                              "cores": os.cpu_count(), "note": args.note,
                              "load_start": [round(v, 2) for v in os.getloadavg()]}
    x = table(card, args.rows)
    say(f"spark-bench: in-process, {args.rows:,} rows")
    result["in_process"] = in_process(args.mar, x)
    with tempfile.TemporaryDirectory(prefix="spark-bench-") as tmp:
        with serving(card, make_payloads(card, Path(tmp)).single) as running:
            result["client_score"] = score_a_file(running, card, args.rows)
        result["spark"] = on_spark(args.mar, x, card, Path(tmp), args.master)
    result["load_end"] = [round(v, 2) for v in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "spark.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "spark.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
