"""handlers/observability without a server: request IDs, settings, JSON log lines, the
prediction log (bounded, failures counted, read back by make train's CSV loader) and spans
exported to a real OTLP/HTTP receiver (tests/support/otlp_receiver.py)."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
import torch
import yaml

from handlers.observability import logs, prediction_log, tracing
from handlers.observability.observer import Observer
from handlers.observability.request_id import is_valid, request_id
from handlers.settings import ObservabilitySettings, PredictionLogSettings, SettingsError, checked
from model.data import load_csv
from tests.conftest import REPO
from tests.support.otlp_receiver import Receiver

SHIPPED = yaml.safe_load((REPO / "serve_config/model-config.yaml").read_text())["handler"]["observability"]
FEATURES = [f"f{i}" for i in range(1, 4)]
CLASSES = ["alpha", "beta"]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BAD_IDS = ["x" * 129, "a\nb", "a\rINFO forged", "a\x00", "é", "a b", "", None, 7]


def settings(**changes) -> ObservabilitySettings:
    section = {**SHIPPED, **changes}
    return checked(ObservabilitySettings, section, "handler.observability")


@pytest.mark.parametrize("good", ["a", "order-42.a:b_c", "0" * 128, "4bf92f3577b34da6a3ce929d0e0e4736"])
def test_a_valid_client_id_is_kept(good):
    assert request_id(good, "ts-id") == good


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_bad_client_id_is_replaced_by_torchserves_or_a_new_one(bad):
    assert request_id(bad, "ts-id") == "ts-id"
    made = request_id(bad, "bad\nfallback")
    assert is_valid(made) and len(made) == 32 and "fallback" not in made


def test_the_shipped_settings_turn_everything_costly_off():
    s = checked(ObservabilitySettings, SHIPPED, "handler.observability")
    assert s.otlp_endpoint == "" and s.prediction_log is not None and not s.prediction_log.enabled
    assert s.log_format == "text" and s.access_log == "errors"
    assert tracing.start(s, "m", "1") is None


@pytest.mark.parametrize("change", [{"log_format": "xml"}, {"access_log": True}, {"otlp_queue_size": 0},
                                    {"otlp_timeout_s": "1"}])
def test_a_wrong_setting_fails_the_load(change):
    with pytest.raises(SettingsError, match=next(iter(change))):
        settings(**change)


def test_a_missing_key_is_named():
    section = dict(SHIPPED)
    del section["access_log"]
    with pytest.raises(SettingsError, match="model-config.yaml: handler.observability.access_log: Field required"):
        checked(ObservabilitySettings, section, "handler.observability")


def test_json_lines_hold_no_raw_control_characters():
    logger = logging.Logger("t")
    out = io.StringIO()
    logger.addHandler(logging.StreamHandler(out))
    logs.use_format("json", root=logger)
    logger.warning("line\nforged\r\x1b[31m é")
    line = out.getvalue()
    assert line.count("\n") == 1 and "\r" not in line and "\x1b" not in line
    assert json.loads(line)["message"] == "line\nforged\r\x1b[31m é" and json.loads(line)["level"] == "WARNING"


def log_settings(tmp_path, **changes) -> PredictionLogSettings:
    values = {**SHIPPED["prediction_log"], "sample_rate": 1.0, "directory": str(tmp_path), **changes}
    return checked(PredictionLogSettings, values, "prediction_log")


def observer(s: ObservabilitySettings, errors: list[int] | None = None) -> Observer:
    return Observer(s, "m", "1.0", FEATURES, CLASSES, lambda: errors.append(1) if errors is not None else None)


def log_batch(obs: Observer, rows: torch.Tensor, probabilities: torch.Tensor, rid: str = "r1") -> None:
    batch = obs.batch(1, lambda i, name: rid if name == "X-Request-ID" else None, {})
    obs.log_predictions(batch, [(0, rows, probabilities)])


def test_logged_predictions_read_back_as_make_trains_csv(tmp_path):
    s = settings(prediction_log={**SHIPPED["prediction_log"], "sample_rate": 1.0, "directory": str(tmp_path / "p")})
    obs = observer(s)
    rows = torch.randn(12, 3, generator=torch.Generator().manual_seed(0)) * 1e3
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8]] * 6)
    log_batch(obs, rows[:5], probabilities[:5])
    log_batch(obs, rows[5:], probabilities[5:], rid="r2")
    records = list(prediction_log.read(tmp_path / "p"))
    assert [r["request_id"] for r in records] == ["r1", "r2"] and records[0]["model_version"] == "1.0"
    assert records[0]["labels"] == ["alpha", "beta", "alpha", "beta", "alpha"]
    assert prediction_log.main(["to-csv", str(tmp_path / "p"), "--out", str(tmp_path / "rows.csv")]) == 0
    data = load_csv(tmp_path / "rows.csv", "label")  # what make train DATA=rows.csv TARGET=label reads
    assert data.feature_names == tuple(FEATURES)
    assert torch.equal(data.x, rows)  # float32 exact through the text
    assert [data.class_names[int(c)] for c in data.y] == ["alpha", "beta"] * 6


def test_the_log_rotates_within_its_bound(tmp_path):
    log = prediction_log.PredictionLog(tmp_path / "predictions-1.jsonl", log_settings(tmp_path, max_bytes=2000,
                                                                                     backup_count=2), lambda: None)
    for i in range(200):
        log.write({"i": i, "rows": [[0.5] * 10]})
    files = sorted(tmp_path.glob(prediction_log.FILE_GLOB))
    assert len(files) == 3 and all(f.stat().st_size <= 2000 for f in files)


def test_a_sample_rate_keeps_about_that_share(tmp_path):
    log = prediction_log.PredictionLog(tmp_path / "p.jsonl", log_settings(tmp_path, sample_rate=0.1), lambda: None)
    kept = sum(log.sampled() for _ in range(10_000))
    assert 700 < kept < 1300


def test_a_full_disk_is_counted_not_raised(tmp_path):
    errors: list[int] = []
    log = prediction_log.PredictionLog("/dev/full", log_settings(tmp_path), lambda: errors.append(1))
    for _ in range(3):
        log.write({"rows": [[1.0]]})
    assert len(errors) == 3


def test_an_unwritable_directory_is_counted_not_raised(tmp_path):
    (tmp_path / "file").write_text("")
    errors: list[int] = []
    s = settings(prediction_log={**SHIPPED["prediction_log"], "sample_rate": 1.0, "directory": str(tmp_path / "file/p")})
    obs = observer(s, errors)
    log_batch(obs, torch.zeros(1, 3), torch.tensor([[0.5, 0.5]]))
    assert len(errors) >= 2  # the directory, then the record


def finished_batch(obs: Observer, headers: dict[str, str], rows: int = 4, status: int = 200):
    batch = obs.batch(1, lambda i, name: headers.get(name), {0: "ts-id"})
    batch.decoded(0, rows)
    started = time.time_ns()
    batch.scored([0], started)
    batch.answered(0, status)
    batch.finish()
    return batch


def test_spans_reach_a_real_receiver_in_the_clients_trace():
    with Receiver() as receiver:
        obs = observer(settings(otlp_endpoint=receiver.endpoint))
        batch = finished_batch(obs, {"traceparent": TRACEPARENT, "X-Request-ID": "abc"})
        obs.tracing.shutdown()
        spans = receiver.trace(TRACEPARENT[3:35], 4)
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"predict", "decode", "score", "encode"}
    root = by_name["predict"]
    assert root.parent_span_id == TRACEPARENT[36:52]  # the client's span is the parent
    assert root.attributes["model.version"] == "1.0" and root.attributes["request.rows"] == 4
    assert root.attributes["request.id"] == batch.request_id(0) == "abc"
    assert all(s.parent_span_id == root.span_id for n, s in by_name.items() if n != "predict")
    assert root.resource["service.version"] == "1.0"


@pytest.mark.parametrize("bad", ["00-" + "0" * 32 + "-00f067aa0ba902b7-01", "garbage\nINFO x", "01-zz", "x" * 10_000])
def test_a_malformed_traceparent_starts_a_new_trace(bad):
    with Receiver() as receiver:
        obs = observer(settings(otlp_endpoint=receiver.endpoint))
        finished_batch(obs, {"traceparent": bad})
        obs.tracing.shutdown()
        spans = receiver.spans
    assert len(spans) == 4 and len({s.trace_id for s in spans}) == 1
    assert spans[0].trace_id != "0" * 32 and bad not in str(spans)


def test_a_receiver_that_is_down_never_fails_or_holds_a_batch():
    with Receiver() as receiver:
        endpoint = receiver.endpoint
    obs = observer(settings(otlp_endpoint=endpoint, otlp_timeout_s=0.2))  # nothing listens there now
    took = []
    for _ in range(50):
        t = time.perf_counter()
        finished_batch(obs, {"traceparent": TRACEPARENT})
        took.append(time.perf_counter() - t)
    obs.tracing.shutdown()
    # the exporter retries in its own thread: a batch's span work is the SDK's bookkeeping only
    assert max(took) < 0.5, took  # a hang guard (a blocking export would take the timeout), not a speed test


def test_access_lines_carry_the_id_and_latency_split(caplog):
    obs = observer(settings(access_log="all"))
    with caplog.at_level(logging.INFO, logger="handlers.access"):
        finished_batch(obs, {"X-Request-ID": "a\nforged"}, status=400)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "handlers.access"]
    assert "request_id=ts-id " in line and "status=400" in line and "forged" not in line
    assert "preprocess_ms=" in line and "inference_ms=" in line
