"""handlers.telemetry records what happened, servectl.metrics.exporter merges what several worker
processes wrote, and the settings give every instance its own exporter port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
import torch
import yaml
from prometheus_client import CollectorRegistry, values

from common.model_card import ModelCard
from handlers.contract import Parsed, RequestError
from handlers.telemetry import LATENCY_BUCKETS, PREFIX, Telemetry, class_counts, out_of_range_counts
from servectl.config.settings import SERVECTL_CONFIG, ServeSettings
from servectl.metrics import exporter
from servectl.waiting import wait_for

LABELS = {"model_name": "m", "model_version": "1.0"}


def card(**changes) -> ModelCard:
    fields = dict(
        model_name="m",
        version="1.0",
        feature_names=("a", "b", "c"),
        class_names=("x", "y", "z"),
        normalisation={"mean": [0.0] * 3, "std": [1.0] * 3},
        training_range={"min": [0.0, -1.0, -5.0], "max": [1.0, 1.0, 5.0]},
        metrics={},
        torch_version="",
        created_at="",
        model_file="model.pt",
        sha256="",
    )
    return ModelCard(**{**fields, **changes})


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """A sample of the metric ``<PREFIX>_<name>`` (the prefix is handlers.telemetry's)."""
    return registry.get_sample_value(f"{PREFIX}_{name}", {**LABELS, **labels})


def test_latency_buckets_resolve_50_microseconds_to_seconds():
    assert LATENCY_BUCKETS[0] == 50e-6 and LATENCY_BUCKETS[-1] >= 5.0
    assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))
    # at least two buckets per factor of ten below 10 ms: a p99 of a fast model is readable
    for low in (50e-6, 100e-6, 1e-3):
        assert sum(low <= b < low * 10 for b in LATENCY_BUCKETS) >= 3


def test_class_counts():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    assert class_counts(probabilities) == [2, 1, 1]
    assert class_counts(np.array([[0.1, 0.9, 0.0]])) == [0, 1, 0]


def test_out_of_range_counts_per_feature_and_side():
    low, high = np.array([0.0, -1.0]), np.array([1.0, 1.0])
    rows = np.array([[0.0, 1.0], [1.0, -1.0], [0.5, 0.0]])  # boundaries are inside
    assert out_of_range_counts(rows, low, high) is None
    rows = np.array([[-0.1, 2.0], [1.5, 3.0], [2.0, -7.0], [0.5, 0.0]])
    assert out_of_range_counts(rows, low, high) == ([1, 1], [2, 2])


@pytest.mark.parametrize("share", [0.0005, 0.05, 0.5])
def test_out_of_range_counts_are_the_column_sums(share: float):
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(3000, 10)).astype(np.float32)
    limit = float(np.quantile(np.abs(rows), 1 - share))
    low, high = np.full(10, -limit), np.linspace(limit / 2, limit * 2, 10)  # columns differ
    counts = out_of_range_counts(rows, low, high)
    assert counts is not None
    assert counts == ((rows < low).sum(axis=0).tolist(), (rows > high).sum(axis=0).tolist())


def test_scored_counts_rows_classes_and_drift():
    telemetry = Telemetry("m", "1.0", card(), batch_size=8, max_rows=100)
    reg = telemetry.registry
    assert sample(reg, "rows_total") == 0  # every series exists from the start
    assert sample(reg, "feature_out_of_range_total", feature="c", direction="above") == 0
    with torch.inference_mode():  # as in the handler
        x = torch.tensor([[0.5, 0.0, 0.0], [2.0, 0.0, 9.0], [-1.0, 5.0, 9.0], [0.5, -2.0, 0.0]])
        probabilities = torch.tensor([[0.1, 0.8, 0.1], [0.6, 0.2, 0.2], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]])
    telemetry.scored(x, probabilities)
    telemetry.scored(x[:1], probabilities[:1])
    assert sample(reg, "rows_total") == 5
    assert [sample(reg, "predictions_total", predicted_class=c) for c in "xyz"] == [1, 4, 0]
    drift = {
        (f, d): sample(reg, "feature_out_of_range_total", feature=f, direction=d)
        for f in "abc"
        for d in ("below", "above")
    }
    assert drift == {
        ("a", "below"): 1, ("a", "above"): 1,
        ("b", "below"): 1, ("b", "above"): 1,
        ("c", "below"): 0, ("c", "above"): 2,
    }  # fmt: skip
    assert sample(reg, "batch_rows_count") == 2 and sample(reg, "batch_rows_sum") == 5
    assert sample(reg, "batch_rows_bucket", le="4.0") == 2  # 4 rows, then 1
    assert sample(reg, "batch_rows_bucket", le="2.0") == 1


def test_batch_counts_statuses_rejections_and_times():
    telemetry = Telemetry("m", "1.0", card(), batch_size=8, max_rows=100)
    reg = telemetry.registry
    for code in ("200", "400", "413", "415"):
        assert sample(reg, "requests_total", code=code) == 0
    parsed = [
        Parsed(torch.zeros(1, 3)),
        RequestError(400, "invalid_json", "x"),
        Parsed(torch.zeros(2, 3)),
        RequestError(415, "unsupported_media_type", "x"),
        RequestError(400, "invalid_json", "x"),
        RequestError(400, "wrong_shape", "x"),
    ]
    started = time.perf_counter()
    parsed_at = started + 0.00018  # inside the 0.0002 bucket whatever the float rounding
    time.sleep(0.001)  # not a wait: plants a handler duration of at least 1 ms for the assertion below
    telemetry.batch(parsed, started, parsed_at)
    assert sample(reg, "requests_total", code="200") == 2
    assert sample(reg, "requests_total", code="400") == 3
    assert sample(reg, "requests_total", code="415") == 1
    rejected = {t: sample(reg, "rejected_requests_total", error_type=t) for t in
                ("invalid_json", "unsupported_media_type", "wrong_shape")}  # fmt: skip
    assert rejected == {"invalid_json": 2, "unsupported_media_type": 1, "wrong_shape": 1}
    assert sample(reg, "preprocess_seconds_sum") == pytest.approx(0.00018)
    assert sample(reg, "preprocess_seconds_bucket", le="0.0002") == 1
    assert sample(reg, "preprocess_seconds_bucket", le="0.0001") == 0
    assert sample(reg, "handler_seconds_sum") >= 0.001
    assert sample(reg, "handler_seconds_count") == 1
    assert sample(reg, "batch_requests_sum") == 6


def record_in_a_worker_process(multiproc_dir, n: int) -> int:
    """Fork a process that records in multiprocess mode, as a TorchServe worker does; its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
        values.ValueClass = values.get_value_class()  # what importing with the variable set does
        telemetry = Telemetry("m", "1.0", card(), batch_size=8, max_rows=100)
        x = torch.full((n, 3), 0.5)
        x[0, 2] = 6.0
        telemetry.scored(x, torch.tensor([[0.1, 0.2, 0.7]] * n))
        started = time.perf_counter()
        telemetry.batch([Parsed(x), RequestError(400, "invalid_json", "x")], started - 0.00007, started)
        code = 0
    finally:
        os._exit(code)


def test_exporter_merges_what_worker_processes_wrote(tmp_path):
    pids = [record_in_a_worker_process(tmp_path, n) for n in (3, 4)]
    assert [os.waitpid(pid, 0)[1] for pid in pids] == [0, 0]
    assert len(list(tmp_path.glob("counter_*.db"))) == 2
    reg = exporter.registry(tmp_path, None)
    assert sample(reg, "rows_total") == 7
    assert sample(reg, "predictions_total", predicted_class="z") == 7
    assert sample(reg, "feature_out_of_range_total", feature="c", direction="above") == 2
    assert sample(reg, "rejected_requests_total", error_type="invalid_json") == 2
    assert sample(reg, "requests_total", code="200") == 2
    assert sample(reg, "handler_seconds_count") == 2
    assert sample(reg, "batch_rows_bucket", le="4.0") == 2  # merged buckets are cumulative
    assert sample(reg, "batch_rows_bucket", le="2.0") == 0


def test_worker_collector_says_when_the_management_api_is_unreachable():
    from tests.conftest import free_ports

    reg = CollectorRegistry()
    reg.register(exporter.WorkerCollector(f"http://127.0.0.1:{free_ports(1)[0]}", "m", timeout=0.5))
    assert reg.get_sample_value(f"{PREFIX}_management_up", {"model_name": "m"}) == 0
    assert reg.get_sample_value(f"{PREFIX}_workers", {**LABELS, "status": "READY"}) is None


def test_process_usage_of_a_live_and_a_gone_process():
    cpu, rss = exporter.process_usage(os.getpid())
    assert cpu > 0 and rss > 10e6
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert exporter.process_usage(gone.pid) is None


def test_each_instance_gets_its_own_exporter_port_and_torchserve_never_sees_the_key(tmp_path):
    base = ServeSettings.load("m", run_dir=tmp_path)
    shipped = base.model_metrics.port
    assert base.model_metrics.url == yaml.safe_load(SERVECTL_CONFIG.read_text())["model_metrics_address"]
    three = base.with_ports(9100, 9101, 9102)  # how older callers call it
    assert three.model_metrics.port not in (shipped, 9100, 9101, 9102, 0)
    assert {three.model_metrics.port} & {int(three.properties["grpc_inference_port"]),
                                         int(three.properties["grpc_management_port"])} == set()  # fmt: skip
    four = base.with_ports(9100, 9101, 9102, model_metrics=9103, host="127.0.0.2")
    assert four.model_metrics.url == "http://127.0.0.2:9103"
    rendered = four.render().read_text()
    assert "model_metrics_address" not in rendered and "canary_proxy_address" not in rendered
    assert "metrics_address=http://127.0.0.2:9102" in rendered
    assert four.multiproc_dir.parent == tmp_path


def launch(tmp_path, port: int, *command: str) -> subprocess.Popen:
    """servectl's launch: the exporter forks and the launcher execs ``command`` (TorchServe
    there, ``sleep`` here) in a new session, keeping its pid."""
    return subprocess.Popen(
        [sys.executable, str(exporter.__file__), "--listen", f"127.0.0.1:{port}", "--multiproc-dir", str(tmp_path),
         "--", *command],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def serving(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of the group ``pgid``, via psutil (no `ps` needed)."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    return members


@pytest.mark.parametrize("how", ["the group is stopped", "the server dies alone"])
def test_the_exporter_lives_and_dies_with_the_server(tmp_path, how):
    from servectl.instance.processes import stop_group
    from tests.conftest import free_ports

    port = free_ports(1)[0]
    proc = launch(tmp_path, port, "/bin/sleep", "60")
    try:
        wait_for(lambda: serving(port), timeout=20, what="the exporter to answer")
        # the launcher execs the server (same pid) while its forked child starts serving: either may come first
        wait_for(lambda: Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"/bin/sleep"), timeout=10,
                 what="the launcher to exec the server, keeping its pid")
        members = group_members(proc.pid)
        assert proc.pid in members and len(members) == 2  # the server and the exporter
        if how == "the group is stopped":
            stop_group(proc.pid, timeout=10)
        else:
            proc.kill()
            proc.wait()
        wait_for(lambda: not group_members(proc.pid), timeout=20, what="the exporter to exit")
        assert not serving(port)
    finally:
        if group_members(proc.pid):
            os.killpg(proc.pid, 9)
        proc.wait()


def test_batch_histograms_reach_the_largest_batch_the_config_allows():
    """The top bucket is the most a batch can hold, so no batch lands in +Inf unseen."""
    from handlers.telemetry import request_buckets, row_buckets

    assert row_buckets(640_000)[-1] == 640_000 and row_buckets(640_000)[:11] == tuple(2**i for i in range(11))
    assert list(row_buckets(1)) == [1] and list(row_buckets(3)) == [1, 2, 3]
    assert request_buckets(64)[-1] == 64 and request_buckets(1) == (1,)
    assert all(a < b for a, b in zip(request_buckets(100), request_buckets(100)[1:]))
    registry = CollectorRegistry()
    Telemetry("m", "1.0", card(), registry=registry, batch_size=8, max_rows=100)
    bounds = [s.labels["le"] for f in registry.collect() if f.name == "tabular_batch_rows" for s in f.samples if "le" in s.labels]
    assert bounds[-2:] == ["800.0", "+Inf"]
