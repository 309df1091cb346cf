"""The ``handler.observability`` section of serve_config/model-config.yaml, typed. The YAML file
is the one home of every value (its comments say what each does); this module holds no default
of its own: an absent section means everything off, and a present section must name every key,
so a typo fails the worker's load instead of silently turning a feature off."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LOG_FORMATS = ("text", "json")
ACCESS_LOG = ("off", "errors", "all")


class SettingsError(ValueError):
    """A missing or wrong key in handler.observability."""


def _key(section: dict[str, Any], key: str, where: str) -> Any:
    if key not in section:
        raise SettingsError(f"{where}.{key} is missing in model-config.yaml")
    return section[key]


def _choice(section: dict[str, Any], key: str, where: str, choices: tuple[str, ...]) -> str:
    value = _key(section, key, where)
    if value not in choices:
        raise SettingsError(f"{where}.{key} in model-config.yaml: expected one of {choices}, got {value!r}")
    return str(value)


def _positive(section: dict[str, Any], key: str, where: str, kind: type = int) -> Any:
    value = _key(section, key, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise SettingsError(f"{where}.{key} in model-config.yaml: expected a positive number, got {value!r}")
    return kind(value)


@dataclass(frozen=True)
class PredictionLogSettings:
    sample_rate: float
    directory: str
    max_bytes: int
    backup_count: int

    @property
    def enabled(self) -> bool:
        return self.sample_rate > 0 and bool(self.directory)

    @classmethod
    def from_config(cls, section: dict[str, Any], where: str) -> PredictionLogSettings:
        rate = _key(section, "sample_rate", where)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise SettingsError(f"{where}.sample_rate in model-config.yaml: expected 0..1, got {rate!r}")
        return cls(
            float(rate), str(_key(section, "directory", where) or ""),
            _positive(section, "max_bytes", where), _positive(section, "backup_count", where),
        )  # fmt: skip


@dataclass(frozen=True)
class ObservabilitySettings:
    log_format: str
    access_log: str
    otlp_endpoint: str
    otlp_timeout_s: float
    otlp_queue_size: int
    prediction_log: PredictionLogSettings | None

    @classmethod
    def from_config(cls, section: dict[str, Any] | None) -> ObservabilitySettings:
        """The typed section; ``None`` (no section, e.g. an older model-config.yaml): all off."""
        if section is None:
            return cls("text", "off", "", 1.0, 1, None)
        where = "handler.observability"
        predictions = _key(section, "prediction_log", where)
        return cls(
            log_format=_choice(section, "log_format", where, LOG_FORMATS),
            access_log=_choice(section, "access_log", where, ACCESS_LOG),
            otlp_endpoint=str(_key(section, "otlp_endpoint", where) or ""),
            otlp_timeout_s=_positive(section, "otlp_timeout_s", where, float),
            otlp_queue_size=_positive(section, "otlp_queue_size", where),
            prediction_log=PredictionLogSettings.from_config(predictions, f"{where}.prediction_log"),
        )
