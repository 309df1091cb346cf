"""Typed view of ``serve_config/model-config.yaml``: the per-model settings packed into the .mar.

TorchServe reads that file (workers, batching, timeouts) and the handler reads its ``handler``
section (its own settings model, handlers/). servectl, tests, benchmarks and deploy/ read the
values they need through :func:`load` instead of copying numbers, so a change to the file
reaches all of them, and a bad value fails with the file and key named. Loading has no side
effects; :meth:`ModelConfig.to_yaml` writes a changed copy (e.g. a shorter response timeout for
a test's own archive) without losing keys this class does not type.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasPath, ConfigDict, Field, PrivateAttr

from common.settings_file import Settings, load_section, read_yaml
from servectl.config.paths import SERVE_CONFIG

MODEL_CONFIG = SERVE_CONFIG / "model-config.yaml"


class ModelConfig(Settings):
    """The settings of model-config.yaml that code outside TorchServe needs to know. Each
    field's alias is its path in the YAML file (``handler.max_rows`` is the ``max_rows`` key
    of the ``handler`` section); keys not typed here are TorchServe's or the handler's."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    min_workers: int = Field(validation_alias="minWorkers", ge=1)
    max_workers: int = Field(validation_alias="maxWorkers", ge=1)
    batch_size: int = Field(validation_alias="batchSize", ge=1)
    max_batch_delay_ms: int = Field(validation_alias="maxBatchDelay", ge=0)
    response_timeout_s: int = Field(validation_alias="responseTimeout", gt=0)
    startup_timeout_s: int = Field(validation_alias="startupTimeout", gt=0)
    max_retry_timeout_s: int = Field(validation_alias="maxRetryTimeoutInSec", ge=0)
    max_rows: int = Field(validation_alias=AliasPath("handler", "max_rows"), ge=1)
    torch_threads: int = Field(validation_alias=AliasPath("handler", "torch_threads"), ge=1)
    explain_max_rows: int = Field(validation_alias=AliasPath("handler", "explain", "max_rows"), ge=1)
    # the whole document, so that to_yaml() keeps the keys not typed above
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], path: Path = MODEL_CONFIG) -> ModelConfig:
        """The typed fields of a parsed document (``path``: the file errors name)."""
        config = load_section(cls, path, document=doc)
        config._raw = copy.deepcopy(dict(doc))
        return config

    @property
    def raw(self) -> dict[str, Any]:
        """The whole document, untyped keys included (e.g. the handler's section for its own
        settings model); a copy, so a caller cannot change this configuration through it."""
        return copy.deepcopy(self._raw)

    def with_values(self, **changes: int) -> ModelConfig:
        """The same configuration with some typed fields changed (``to_yaml`` writes them)."""
        changed = self.model_copy(update=changes)
        changed._raw = copy.deepcopy(self._raw)
        changed._raw = changed.to_dict()  # the document it writes, so it equals the copy loaded back
        return changed

    def to_dict(self) -> dict[str, Any]:
        """The YAML document: the original keys with the typed fields' current values."""
        doc = copy.deepcopy(self._raw)
        for name, field in type(self).model_fields.items():
            alias = field.validation_alias
            keys = [str(part) for part in alias.path] if isinstance(alias, AliasPath) else [str(alias)]
            *parents, last = keys
            node = doc
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = getattr(self, name)
        return doc

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load(path: Path | str = MODEL_CONFIG) -> ModelConfig:
    """The model configuration in ``path`` (by default the shipped serve_config one)."""
    return ModelConfig.from_dict(read_yaml(Path(path)), Path(path))
