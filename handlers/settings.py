"""The ``handler`` section of serve_config/model-config.yaml, typed and checked once.

TorchServe hands the worker the whole file as ``context.model_yaml_config``; the handler's
``initialize`` calls :func:`from_config` once, and every part of the handler reads its values
from the one :class:`HandlerSettings` it returns. The YAML file is the one home of every value
(its comments say what each does): no field here has a default, so a key left out or misspelt
fails the worker's load, naming the file and the key (``model-config.yaml:
handler.explain.steps: ...``), instead of silently meaning something else.

pydantic in strict mode: ``"2"`` is not 2 and ``true`` is not 1, as a YAML typo would have it.
A leaf module (pydantic only), so the contract, observability and explanation modules import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator

from common.settings_file import Settings, SettingsError, describe

FILE = Path("model-config.yaml")
Model = TypeVar("Model", bound=BaseModel)
__all__ = ["SettingsError"]


class Section(Settings):
    """Strict, closed and frozen: read once at start-up, never changed by a request."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ExplainSettings(Section):
    """``handler.explain``: Integrated Gradients' steps, tolerance and budgets (handlers.explain)."""

    steps: PositiveInt
    max_steps: PositiveInt
    tolerance: float = Field(ge=0)
    max_rows: PositiveInt
    max_batch_points: PositiveInt | None  # path points one batch may spend; null: unbounded

    @model_validator(mode="after")
    def consistent(self) -> Self:
        if self.steps > self.max_steps:
            raise ValueError(f"steps ({self.steps}) must not exceed max_steps ({self.max_steps})")
        if self.max_batch_points is not None and self.max_batch_points < self.max_rows * self.steps:
            raise ValueError(
                f"max_batch_points ({self.max_batch_points}) must admit one request of max_rows rows "
                f"({self.max_rows} x {self.steps} steps)"
            )
        return self


class PredictionLogSettings(Section):
    """``handler.observability.prediction_log`` (handlers.observability.prediction_log)."""

    sample_rate: float = Field(ge=0, le=1)
    directory: str
    max_bytes: PositiveInt
    backup_count: PositiveInt

    @property
    def enabled(self) -> bool:
        return self.sample_rate > 0 and bool(self.directory)


class ObservabilitySettings(Section):
    """``handler.observability``: log format, access lines, traces, the prediction log."""

    log_format: Literal["text", "json"]
    access_log: Literal["off", "errors", "all"]
    otlp_endpoint: str
    otlp_timeout_s: PositiveFloat
    otlp_queue_size: PositiveInt
    prediction_log: PredictionLogSettings


class HandlerSettings(Section):
    """``handler``: what the handler needs beyond the model card."""

    max_rows: PositiveInt
    input_range_widths: PositiveFloat
    torch_threads: PositiveInt
    buffered_reader: bool
    gc_young_threshold: PositiveInt
    explain: ExplainSettings
    observability: ObservabilitySettings


def checked(model: type[Model], section: Any, where: str) -> Model:
    """``section`` validated as ``model``; a SettingsError names the file and every bad key
    under ``where`` (its place in the file)."""
    try:
        return model.model_validate(section)
    except ValidationError as exc:
        raise SettingsError(describe(FILE, where, exc)) from None


def from_config(model_yaml_config: Mapping[str, Any] | None) -> HandlerSettings:
    """The ``handler`` section of the model's model-config.yaml (as TorchServe parsed it)."""
    section = (model_yaml_config or {}).get("handler")
    if section is None:
        raise SettingsError(f"{FILE}: handler: Field required; the archive must carry serve_config/{FILE}")
    return checked(HandlerSettings, section, "handler")
