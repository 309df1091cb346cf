"""A lifecycle step (rollout, rollback, retire, ...) under the mixed load of ``loadmix``: how long
the step took, and every answer during it checked against the in-process output of the version
that gave it, on a server of its own (``lifecycle_server``: free loopback ports, a temp store with
the built model and a candidate). Used by tests/reliability/test_lifecycle.py (a few seconds of
load per step) and by ``make bench-lifecycle`` (benchmarks/lifecycle.py: longer).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.model_card import METADATA_FILE, ModelCard
from model import archive, export, train
from model.data import make_synthetic
from servectl.config import model_config
from servectl.config.settings import REPO, ServeSettings, free_loopback_ports
from servectl.instance import launch, processes, readiness
from servectl.release import lifecycle
from servectl.store import digests
from tests.support.loadmix import Mix, Report, run


@dataclass
class StepReport:
    name: str
    seconds: float  # how long the step itself took
    report: Report  # the whole load around it
    during: list[Any]  # the answers that arrived while the step ran
    after: list[Any]  # the answers that were sent after the step ended
    in_flight: int = 0  # requests that were in flight at some moment of the step

    def summary(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "step_seconds": round(self.seconds, 2),
            "requests": len(self.report.results),
            "answers_during_step": len(self.during),
            "in_flight_during_step": self.in_flight,
            "by_version": dict(Counter(r.version for r in self.report.results if r.status == 200)),
            "server_errors": self.report.server_errors,
            "no_answer": self.report.no_answer,
            "wrong_answers": len(self.report.problems),
            "latency_ms_during_step": self.report.latency_percentiles(self.during),
            "latency_ms_whole_load": self.report.latency_percentiles(),
        }


def probabilities(artifacts: Path, x: np.ndarray) -> np.ndarray:
    """The in-process output of the model in ``artifacts`` for rows ``x``."""
    card = ModelCard.load(artifacts / METADATA_FILE)
    model = torch.jit.load(str(artifacts / card.model_file)).eval()
    with torch.inference_mode():
        return torch.softmax(model(torch.as_tensor(x)), 1).double().numpy()


def build_version(out: Path, store: Path, name: str, version: str, seed: int) -> Path:
    """Train (synthetic data, ``seed``), export and archive one version into ``store``;
    returns its artifacts folder. ``store``'s NAME.mar is left as it was."""
    train.run(make_synthetic(seed=seed), train.TrainConfig(seed=seed), out, "synthetic")
    export.export(name, version, out)
    archive.archive(out, store, build=out / "build", latest=False)
    return out


def under_load(
    settings: ServeSettings,
    mix: Mix,
    expected: dict[str, np.ndarray],
    class_names: list[str],
    name: str,
    action: Callable[[], object],
    settle: float = 1.0,
    connections: int = 4,
    base_url: str | None = None,
    atol: float = 1e-6,
) -> StepReport:
    """Run ``action`` while the load runs, with ``settle`` seconds of load before and after
    (``base_url``: where the load goes, default the instance's inference API). Every valid
    answer must equal its version's in-process probabilities within ``atol`` (batching changes
    only the last bits, about 2e-9)."""
    stop = threading.Event()
    holder: dict[str, Report] = {}
    bound = 600.0  # the load's own bound, should the step hang

    def load() -> None:
        holder["report"] = run(
            base_url or settings.inference.url, settings.model_name, mix, expected, class_names, bound, connections,
            timeout=model_config.load().response_timeout_s + 5, stop=stop, atol=atol,
        )

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    t0 = time.monotonic()
    time.sleep(settle)  # load before the step: part of the measurement, not a wait for a condition
    started = time.monotonic()
    try:
        action()
    finally:
        ended = time.monotonic()
        time.sleep(settle)
        stop.set()
        thread.join()
    report = holder["report"]
    during = [r for r in report.results if started - t0 <= r.t <= ended - t0]
    after = [r for r in report.results if r.t - r.latency > ended - t0]
    in_flight = sum(1 for r in report.results if r.t - r.latency <= ended - t0 and r.t >= started - t0)
    return StepReport(name, ended - started, report, during, after, in_flight)


@contextmanager
def lifecycle_server(work: Path, seed: int = 7) -> Iterator[tuple[ServeSettings, dict[str, np.ndarray], str, str]]:
    """A server of its own on the repo's built model (version A) with a candidate (version B,
    trained with ``seed``) in a temp store; yields settings, outputs by version, A, B."""
    store = work / "store"
    store.mkdir(parents=True)
    card = ModelCard.load(REPO / "artifacts" / METADATA_FILE)
    for mar in (f"{card.model_name}.mar", f"{card.model_name}-{card.version}.mar"):
        digests.copy(REPO / "model_store" / mar, store)  # with its recorded digest: servectl checks it
    candidate = f"{card.version}.{seed}"
    artifacts = build_version(work / "candidate", store, card.model_name, candidate, seed)
    x = torch.load(REPO / "artifacts" / "test_split.pt", weights_only=True)["x"].numpy()
    expected = {card.version: probabilities(REPO / "artifacts", x), candidate: probabilities(artifacts, x)}
    ports = free_loopback_ports(4)
    settings = ServeSettings.load(card.model_name, run_dir=work / "run", model_store=store)
    settings = settings.with_ports(ports[0], ports[1], ports[2], model_metrics=ports[3])
    settings.run_dir.mkdir(parents=True)
    with open(settings.run_dir / "torchserve.out", "ab") as out:
        proc = launch.start(settings, stdout=out)
    try:
        readiness.wait_ready(settings, alive=lambda: proc.poll() is None)
        lifecycle.restore(settings)
        yield settings, expected, card.version, candidate
    finally:
        processes.stop(settings)
