"""Typed view of ``serve_config/model-config.yaml``: the per-model settings packed into the .mar.

TorchServe reads that file (workers, batching, timeouts) and the handler reads its ``handler``
section (the row limit). Tests, benchmarks and tools read the same values through
:func:`load` instead of copying numbers, so a change to the file reaches all of them.
Loading has no side effects; :meth:`ModelConfig.to_yaml` writes a changed copy (e.g. a shorter
response timeout for a test's own archive) without losing keys this class does not type.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

MODEL_CONFIG = Path(__file__).resolve().parents[2] / "serve_config" / "model-config.yaml"


@dataclass(frozen=True)
class ModelConfig:
    """The settings of model-config.yaml that code outside TorchServe needs to know.

    Each field's ``metadata["key"]`` is its path in the YAML file (``handler.max_rows`` is
    the ``max_rows`` key of the ``handler`` section).
    """

    min_workers: int = field(metadata={"key": "minWorkers"})
    max_workers: int = field(metadata={"key": "maxWorkers"})
    batch_size: int = field(metadata={"key": "batchSize"})
    max_batch_delay_ms: int = field(metadata={"key": "maxBatchDelay"})
    response_timeout_s: int = field(metadata={"key": "responseTimeout"})
    startup_timeout_s: int = field(metadata={"key": "startupTimeout"})
    max_retry_timeout_s: int = field(metadata={"key": "maxRetryTimeoutInSec"})
    max_rows: int = field(metadata={"key": "handler.max_rows"})
    torch_threads: int = field(metadata={"key": "handler.torch_threads"})
    explain_max_rows: int = field(metadata={"key": "handler.explain.max_rows"})
    # the whole document, so that to_yaml() keeps keys not typed above
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ModelConfig:
        """Read the typed fields from a parsed document; a missing key names itself."""
        values: dict[str, int] = {}
        for f in _typed_fields():
            value: Any = doc
            for part in f.metadata["key"].split("."):
                if not isinstance(value, Mapping) or part not in value:
                    raise KeyError(f"model-config: missing {f.metadata['key']!r}")
                value = value[part]
            values[f.name] = int(value)
        return cls(**values, raw=dict(doc))

    def with_values(self, **changes: int) -> ModelConfig:
        """The same configuration with some typed fields changed (``to_yaml`` writes them)."""
        values: dict[str, Any] = dict(changes)
        return replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        """The YAML document: the original keys with the typed fields' current values."""
        doc = copy.deepcopy(dict(self.raw))
        for f in _typed_fields():
            *parents, last = f.metadata["key"].split(".")
            node = doc
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = getattr(self, f.name)
        return doc

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _typed_fields() -> list[Any]:
    return [f for f in fields(ModelConfig) if "key" in f.metadata]


def load(path: Path | str = MODEL_CONFIG) -> ModelConfig:
    """The model configuration in ``path`` (by default the shipped serve_config one)."""
    return ModelConfig.from_dict(yaml.safe_load(Path(path).read_text()) or {})
