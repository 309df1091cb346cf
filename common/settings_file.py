"""Read a settings file (or one section of it) into a pydantic model, once, and fail fast.

Every component reads its settings from serve_config/ through :func:`load_section`: the file
is parsed, the section validated into a frozen model, and any problem is one ``ValueError``
naming the file and the dotted key (``serve_config/lifecycle.yaml: watch.max_failed_ticks:
Input should be a valid integer``), so a typo stops the command that reads it instead of
surfacing later as a ``KeyError`` deep in a rollout. The models declare no defaults: every
value lives in its file, once. Nothing happens at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

REPO = Path(__file__).resolve().parents[1]
M = TypeVar("M", bound=BaseModel)


class SettingsError(ValueError):
    """A settings file that is missing, unreadable or holds a value its model refuses."""


class Settings(BaseModel):
    """Base of the settings models: immutable, and a key the model does not know is an error
    (a misspelt key must not silently leave the file's intent unread)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def shown(path: Path) -> str:
    """``path`` as a message names it: relative to the repo when inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping a YAML settings file holds ({} for an empty file)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"{shown(path)}: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise SettingsError(f"{shown(path)}: expected a mapping of keys, got {type(doc).__name__}")
    return doc


def load_section(model: type[M], path: Path, section: str = "", document: Mapping[str, Any] | None = None) -> M:
    """``section`` (dotted; "" for the whole file) of ``path`` validated into ``model``.

    ``document`` is the already parsed file, for formats read elsewhere (a Java properties
    file) or a document changed in memory; by default ``path`` is read as YAML."""
    node: Any = read_yaml(path) if document is None else document
    for part in section.split(".") if section else []:
        if not isinstance(node, Mapping) or part not in node:
            raise SettingsError(f"{shown(path)}: {section}: Field required")
        node = node[part]
    try:
        return model.model_validate(node)
    except ValidationError as exc:
        raise SettingsError(describe(path, section, exc)) from None


def describe(path: Path, section: str, exc: ValidationError) -> str:
    """One line per refused value: ``FILE: KEY.PATH: message``."""
    prefix = section.split(".") if section else []
    lines = []
    for error in exc.errors():
        key = ".".join([*prefix, *(str(part) for part in error["loc"])]) or "(the whole file)"
        got = "" if error["type"] == "missing" else f", got {_short(error['input'])}"
        lines.append(f"{shown(path)}: {key}: {error['msg']}{got}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    """A refused value as a message shows it: its repr, cut at 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
