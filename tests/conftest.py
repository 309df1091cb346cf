"""Shared fixtures. Each test folder is one tier; its marker is applied here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common.model_card import METADATA_FILE, ModelCard
from handlers import settings as handler_settings
from servectl.config import model_config
from servectl.config.settings import ServeSettings
from servectl.config.settings import free_loopback_ports as free_ports
from servectl.instance import launch, processes, readiness

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"
# Every setting a test needs is read from where it is configured, never copied:
# serve_config/model-config.yaml (workers, batching, timeouts, the row limit) ...
MODEL_CONFIG = model_config.load()
# ... its handler section as the handler reads it (handlers.settings) ...
HANDLER_SETTINGS = handler_settings.from_config(MODEL_CONFIG.raw)
# ... and serve_config/config.properties (ports, properties); the model name plays no part in them
SHIPPED = ServeSettings.load("shipped")
# A client waiting for a prediction: TorchServe answers every request within responseTimeout
# (a worker that does not answer gets "Worker died." then), plus slack for the transport.
ANSWER_TIMEOUT = MODEL_CONFIG.response_timeout_s + 5
# Served probabilities are float32 from a forward pass over whatever batch the request joined;
# the same rows in another batch (or in-process) differ in the last bits (about 2e-9), so
# answers are compared with this absolute tolerance, far above that and far below a real error.
PROBABILITY_ATOL = 1e-6
TIERS = {"unit": "unit", "integration": "integration", "e2e": "e2e", "deploy": "deploy", "reliability": "reliability", "container": "container", "spark": "spark"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, TIERS[tier]))


@pytest.fixture(scope="session")
def built_card() -> ModelCard:
    """The metadata of the model `make archive` built: the one source of names."""
    path = ARTIFACTS / METADATA_FILE
    if not path.is_file():
        pytest.fail(f"{path} is missing: run the tests through 'make test' (it builds the model)")
    return ModelCard.load(path)


@pytest.fixture(scope="session")
def live(built_card, tmp_path_factory) -> ServeSettings:
    """A real TorchServe started from the built .mar on free loopback ports, once per session
    (the integration and Spark tiers), and always torn down."""
    run_dir = tmp_path_factory.mktemp("torchserve")
    settings = ServeSettings.load(built_card.model_name, run_dir=run_dir).with_ports(*free_ports(3))
    with open(run_dir / "torchserve.out", "ab") as out:
        proc = launch.start(settings, stdout=out)
    try:
        readiness.wait_ready(settings, timeout=120, alive=lambda: proc.poll() is None)
        yield settings
    finally:
        processes.stop(settings)


@pytest.fixture(scope="session")
def predict_url(live, built_card) -> str:
    return f"{live.inference.url}/predictions/{built_card.model_name}"


@pytest.fixture(scope="session")
def test_split() -> dict[str, torch.Tensor]:
    return torch.load(ARTIFACTS / "test_split.pt", weights_only=True)


@pytest.fixture(scope="session")
def built_model(built_card: ModelCard) -> torch.jit.ScriptModule:
    return torch.jit.load(str(ARTIFACTS / built_card.model_file)).eval()


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model trained for a few epochs on a small synthetic set, then exported."""
    from model import data, export, train

    out = tmp_path_factory.mktemp("tiny_artifacts")
    config = train.TrainConfig(epochs=3, min_accuracy=0.0)
    train.run(data.make_synthetic(n_rows=300, seed=7), config, out)
    export.export("tiny", "0.1", out)
    return out


@pytest.fixture(scope="session")
def variant_artifacts(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, ModelCard]]:
    """The tiny model exported as each variant (common.model_card.VARIANTS), one folder each."""
    import shutil

    from common.model_card import VARIANTS
    from model import export

    def build(name: str) -> tuple[Path, ModelCard]:
        out = tmp_path_factory.mktemp(f"variant-{name}")
        for item in tiny_artifacts.iterdir():
            shutil.copy2(item, out / item.name)
        return out, export.export("tiny", "0.1", out, name)

    return {name: build(name) for name in VARIANTS}


def assert_same_answer(got: object, want: object, where: str = "answer") -> None:
    """Two JSON answers are equal, floats within PROBABILITY_ATOL: two requests with the same
    rows may be batched differently, which changes the last bits of the probabilities only."""
    if isinstance(want, float) or isinstance(got, float):
        assert isinstance(got, (int, float)) and abs(got - want) <= PROBABILITY_ATOL, f"{where}: {got} != {want}"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for key in want:
            assert_same_answer(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got} != {want}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_answer(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"
