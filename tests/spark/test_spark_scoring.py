"""offline.spark on a local Spark session: the live service's answers for the same rows, its
errors for the rows it refuses, input order and count kept over several partitions, Parquet and
CSV, and the refusals that stop a job before it starts."""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import pandas as pd
import pytest
import requests

from common.model_card import ModelCardError
from offline import archive
from offline.spark import InputError, run
from servectl.errors import ServeError
from tests.conftest import ANSWER_TIMEOUT, PROBABILITY_ATOL, REPO

MAR = REPO / "model_store" / "tabular_classifier.mar"


@pytest.fixture(scope="module")
def rows(test_split) -> np.ndarray:
    return test_split["x"][:300].numpy().astype(np.float64)


def served(predict_url: str, x: np.ndarray) -> np.ndarray:
    """The live service's probabilities for ``x`` (one .npy request, .npy answer)."""
    buf = io.BytesIO()
    np.save(buf, x.astype(np.float32))
    resp = requests.post(predict_url, data=buf.getvalue(), timeout=ANSWER_TIMEOUT,
                         headers={"Content-Type": "application/x-npy", "Accept": "application/x-npy"})
    assert resp.status_code == 200, resp.text
    return np.load(io.BytesIO(resp.content), allow_pickle=False)


def served_error(predict_url: str, header: str, line: str) -> str:
    """The service's answer to one CSV row, as the job words it: ``type: message`` without the line."""
    resp = requests.post(predict_url, data=f"{header}\n{line}\n", headers={"Content-Type": "text/csv"},
                         timeout=ANSWER_TIMEOUT)
    assert resp.status_code == 400, resp.text
    body = resp.json()
    return f"{body['type']}: {re.sub(r'^line 2[,:] ', '', body['message'])}"  # the row's line in that body


def write_csv(path, names, x: np.ndarray, lines: dict[int, str] | None = None) -> None:
    text = [",".join(names)] + [",".join(repr(float(v)) for v in r) for r in x]
    for i, line in (lines or {}).items():
        text[i + 1] = line
    path.write_text("\n".join(text) + "\n")


def scored(spark, src, out, **kwargs) -> tuple[pd.DataFrame, dict]:
    result = run(spark, str(src), str(out), MAR, **kwargs)
    reader = spark.read.option("header", True)
    frame = (reader.csv(str(out)) if str(out).endswith(".csv") else reader.parquet(str(out))).toPandas()
    return frame.astype({"row": int}).sort_values("row").reset_index(drop=True), result


def probabilities(frame: pd.DataFrame, card) -> np.ndarray:
    return frame[list(card.class_names)].to_numpy(dtype=np.float32)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "csv-without-header"])
def test_answers_equal_the_live_service(spark, predict_url, built_card, rows, tmp_path, fmt):
    src = tmp_path / ("rows.parquet" if fmt == "parquet" else "rows.csv")
    names = list(built_card.feature_names)
    if fmt == "csv":
        write_csv(src, names[::-1], rows[:, ::-1])  # a header in another column order, as the service takes it
    elif fmt == "csv-without-header":
        src.write_text("".join(",".join(repr(float(v)) for v in r) + "\n" for r in rows))  # feature order
    else:
        pd.DataFrame(rows, columns=names).to_parquet(src)
    frame, result = scored(spark, src, tmp_path / ("out.parquet" if fmt == "parquet" else "out.csv"))
    want = served(predict_url, rows)
    assert result["rows"] == len(rows) and result["refused"] == {}
    assert frame["row"].tolist() == list(range(len(rows)))
    np.testing.assert_allclose(probabilities(frame, built_card), want, atol=PROBABILITY_ATOL)
    assert frame["label"].tolist() == [built_card.class_names[i] for i in want.argmax(axis=1)]
    assert frame["class_id"].astype(int).tolist() == want.argmax(axis=1).tolist()
    assert frame["error"].isna().all()


def test_refused_csv_rows_carry_the_service_error_and_the_others_are_scored(spark, predict_url, built_card,
                                                                            rows, tmp_path):
    names = list(built_card.feature_names)
    cells = [[repr(float(v)) for v in r] for r in rows[:8]]
    bad = {1: ["abc", *cells[1][1:]], 3: ["nan", *cells[3][1:]], 4: [*cells[4][:9], "1e39"],
           5: ["1e30", *cells[5][1:]], 6: [*cells[6], "7"], 7: cells[7][:5]}
    src = tmp_path / "bad.csv"
    write_csv(src, names, rows[:8], {i: ",".join(c) for i, c in bad.items()})
    frame, result = scored(spark, src, tmp_path / "bad-out.parquet")
    assert len(frame) == 8 and result["refused"] == {"invalid_value": 3, "out_of_range": 1, "wrong_shape": 2}
    header = ",".join(names)
    for i in range(8):
        if i in bad:
            assert frame["error"][i] == served_error(predict_url, header, ",".join(bad[i])), i
            assert frame[["label", *built_card.class_names]].iloc[i].isna().all()
    good = [i for i in range(8) if i not in bad]
    np.testing.assert_allclose(probabilities(frame, built_card)[good], served(predict_url, rows[good]),
                               atol=PROBABILITY_ATOL)


def test_refused_parquet_cells(spark, built_card, rows, tmp_path):
    """Nulls, NaN, float32 overflow and text that holds no number in a typed table: the row is
    refused with the column named; text that holds a number is read as the CSV parser reads it."""
    names = list(built_card.feature_names)
    table = pd.DataFrame(rows[:6], columns=names).astype({names[2]: object})
    table[names[2]] = [str(v) for v in rows[:6, 2]]
    table.loc[1, names[2]] = "abc"
    table.loc[2, names[2]] = None
    table.loc[3, names[0]] = np.nan
    table.loc[4, names[9]] = 1e39
    src = tmp_path / "cells.parquet"
    table.to_parquet(src)
    frame, _ = scored(spark, src, tmp_path / "cells-out.parquet")
    assert frame["error"][1] == f"invalid_value: column {names[2]}: 'abc' is not a number"
    assert frame["error"][2] == f"invalid_value: column {names[2]}: expected a number, got null"
    assert frame["error"][3] == f"invalid_value: column {names[0]}: not a finite number"
    assert frame["error"][4] == f"invalid_value: column {names[9]}: 1e+39 is outside the float32 range"
    assert frame["error"][[0, 5]].isna().all() and frame["label"][[0, 5]].notna().all()


def test_order_and_count_kept_over_four_partitions(spark, predict_url, built_card, test_split, tmp_path):
    """Two executors' worth of partitions (4 on local[2]), shuffled: every row once, each with
    its own answer, and ``row`` puts them back in input order."""
    x = np.tile(test_split["x"].numpy().astype(np.float64), (14, 1))
    x += np.random.default_rng(3).normal(scale=0.01, size=x.shape)  # 2,100 distinct rows
    src = tmp_path / "many.parquet"
    pd.DataFrame(x, columns=list(built_card.feature_names)).to_parquet(src, row_group_size=500)
    out = tmp_path / "many-out.parquet"
    frame, result = scored(spark, src, out, partitions=4)
    assert len(list(out.glob("part-*.parquet"))) == 4
    assert result["rows"] == len(x) and frame["row"].tolist() == list(range(len(x)))
    np.testing.assert_allclose(probabilities(frame, built_card), served(predict_url, x), atol=PROBABILITY_ATOL)


@pytest.mark.parametrize(("columns", "message"), [
    (lambda n: {**{f: 1.0 for f in n}, "extra": 1.0}, "column 'extra' is not a feature"),
    (lambda n: {f: 1.0 for f in n[1:]}, "lacks feature"),
    (lambda n: {**{f: 1.0 for f in n[1:]}, n[0]: True}, "is boolean"),
], ids=["unknown-column", "missing-feature", "boolean-column"])
def test_what_the_service_refuses_whole_stops_the_job_first(spark, built_card, tmp_path, columns, message):
    src = tmp_path / "wrong.parquet"
    pd.DataFrame([columns(list(built_card.feature_names))]).to_parquet(src)
    with pytest.raises(InputError, match=message):
        run(spark, str(src), str(tmp_path / "never.parquet"), MAR)
    assert not (tmp_path / "never.parquet").exists()


def test_a_csv_header_the_service_refuses_stops_the_job(spark, built_card, tmp_path):
    src = tmp_path / "header.csv"
    src.write_text(",".join([*built_card.feature_names[:-1], "f_typo"]) + "\n" + ",".join(["1"] * 10) + "\n")
    with pytest.raises(InputError, match="unknown feature 'f_typo'"):
        run(spark, str(src), str(tmp_path / "never.parquet"), MAR)


def test_an_archive_whose_model_file_changed_is_refused(spark, built_card, rows, tmp_path):
    """The driver scores only a recorded archive (servectl.store.digests); an executor loads only a
    model file whose sha256 is the card's (the handler's check): a model file edited in the .mar."""
    tampered = tmp_path / "tampered.mar"
    with zipfile.ZipFile(MAR) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b"\0" if item.filename == built_card.model_file else data)
    with pytest.raises(ModelCardError, match="does not match the metadata"):
        archive.load(tampered)
    src = tmp_path / "rows.parquet"
    pd.DataFrame(rows[:3], columns=list(built_card.feature_names)).to_parquet(src)
    with pytest.raises(ServeError, match="no digest recorded"):
        run(spark, str(src), str(tmp_path / "never.parquet"), tampered)
    assert archive.load(MAR).archive.card == built_card


def test_pyspark_stays_out_of_the_serving_lock_and_the_image():
    """The Spark tier's packages come from their own lock: the image installs none of them."""
    serving = (REPO / "requirements-serve.lock").read_text()
    spark = (REPO / "requirements-spark.lock").read_text()
    assert "pyspark==" in spark and "pyspark" not in serving and "pyarrow" not in serving
    assert "requirements-spark" not in (REPO / "docker" / "Dockerfile").read_text()
