"""The servectl options the container relies on: the config overlay and the READY rule of
`status --ready` (the image's health check and the pods' readiness probe)."""

from __future__ import annotations

import pytest

from servectl.config.settings import CONFIG_PROPERTIES, ServeSettings, read_properties
from servectl.instance.readiness import is_ready


def status(min_workers: int, states: list[str]) -> dict:
    return {"minWorkers": min_workers, "workers": [{"status": s} for s in states]}


@pytest.mark.parametrize(
    "answer, ready",
    [
        (None, False),  # not registered / not running
        (status(2, []), False),
        (status(2, ["READY", "UNLOADING"]), False),  # registered, one worker still starting
        (status(2, ["READY", "READY"]), True),
        (status(0, []), False),  # at least one READY worker, whatever minWorkers says
        (status(0, ["READY"]), True),
    ],
)
def test_ready_means_min_workers_ready(answer, ready):
    assert is_ready(answer) is ready


def test_overlay_replaces_only_its_keys(tmp_path):
    overlay = tmp_path / "overlay.properties"
    overlay.write_text("# a comment\ninference_address=http://0.0.0.0:9999\njob_queue_size=7\n")
    base = ServeSettings.load("m")
    settings = ServeSettings.load("m", overlay=overlay)
    assert (settings.inference.host, settings.inference.port) == ("0.0.0.0", 9999)
    assert settings.properties["job_queue_size"] == "7"
    assert settings.management == base.management and settings.metrics == base.metrics
    untouched = {k: v for k, v in read_properties(CONFIG_PROPERTIES).items() if k not in ("inference_address", "job_queue_size")}
    assert untouched.items() <= settings.properties.items()
