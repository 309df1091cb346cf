"""Versions of one model on disk: the store layout, the card and test split inside each
archive, and the run folder's record of which versions are loaded and which is the default.

Layout (``model.archive`` writes it): ``model_store/NAME-VERSION.mar`` holds one version and
never changes meaning (a rebuild with another model is refused unless forced);
``model_store/NAME.mar`` is the latest build, as before versions existed. Each archive carries
its model card (``metadata.json``) and the test split it was evaluated on (``test_split.pt``),
so a rollout's pre-flight needs nothing but the archive.

The record (``RUN_DIR/versions.json``) exists because TorchServe 0.12 ignores
``defaultVersion`` for models loaded at start-up: servectl starts the recorded default and
re-registers the others, then sets the default again, before it reports READY.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.model_card import METADATA_FILE, ModelCard
from servectl.config.settings import ServeSettings
from servectl.errors import ServeError

TEST_SPLIT_FILE = "test_split.pt"
STATE_FILE = "versions.json"
# a version is a file name part and a URL path segment: keep it to what is safe in both
VERSION_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")


def check_version(version: str) -> str:
    if not VERSION_PATTERN.match(version) or ".." in version:
        raise ServeError(f"version {version!r}: use letters, digits, '.', '_' or '-' (e.g. 1.1)")
    return version


def archive_name(model_name: str, version: str) -> str:
    """The file name of one version's archive in the model store."""
    return f"{model_name}-{check_version(version)}.mar"


def card_of(mar: Path) -> ModelCard:
    """The model card packed in an archive."""
    with zipfile.ZipFile(mar) as archive:
        return ModelCard.from_dict(json.loads(archive.read(METADATA_FILE)))


def test_split_of(mar: Path) -> dict[str, Any]:
    """The test split packed in an archive ({"x": rows, "y": class ids})."""
    import torch  # only the pre-flight needs it

    with zipfile.ZipFile(mar) as archive:
        try:
            raw = archive.read(TEST_SPLIT_FILE)
        except KeyError:
            raise ServeError(f"{mar.name} has no {TEST_SPLIT_FILE}: rebuild it with 'make archive'") from None
    split: dict[str, Any] = torch.load(io.BytesIO(raw), weights_only=True)
    return split


def built(settings: ServeSettings) -> dict[str, Path]:
    """Every version built for this model in its store, by the version its card names."""
    found = {}
    for mar in sorted(settings.model_store.glob(f"{settings.model_name}-*.mar")):
        try:
            card = card_of(mar)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError):
            continue  # not one of ours: never loaded
        if mar.name == archive_name(settings.model_name, card.version):
            found[card.version] = mar
    return found


def archive_of(settings: ServeSettings, version: str) -> Path:
    """The archive of ``version``, refusing one that is missing or holds another version."""
    mar = settings.model_store / archive_name(settings.model_name, version)
    if not mar.is_file():
        raise ServeError(
            f"no archive of {settings.model_name} {version} in {settings.model_store} "
            f"(build it: make train SEED=... && make archive VERSION={version})"
        )
    if card_of(mar).version != version:
        raise ServeError(f"{mar} holds version {card_of(mar).version}, not {version}")
    return mar


@dataclass
class State:
    """Which versions this instance serves and which one is the default."""

    default: str
    loaded: list[str] = field(default_factory=list)
    previous: str | None = None  # the default before the last rollout: what rollback restores
    canary: str | None = None  # the version the canary proxy sends canary_percent of the default path to
    canary_percent: float = 0.0

    @classmethod
    def load(cls, settings: ServeSettings) -> State | None:
        path = settings.run_dir / STATE_FILE
        try:
            data = json.loads(path.read_text())
            return cls(
                default=str(data["default"]),
                loaded=list(data["loaded"]),
                previous=data.get("previous"),
                canary=data.get("canary"),
                canary_percent=float(data.get("canary_percent", 0.0)),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise ServeError(f"{path} is damaged ({exc}): delete it to start from {settings.mar.name}") from None

    def save(self, settings: ServeSettings) -> None:
        """Atomically, so that a crash never leaves half a record for the next start."""
        write_atomic(settings.run_dir / STATE_FILE, json.dumps(asdict(self), indent=2) + "\n")


def write_atomic(path: Path, text: str) -> None:
    """Write a temp file beside ``path`` and rename it over ``path``: a reader (the next start,
    an nginx reload) sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def startup_archive(settings: ServeSettings) -> Path:
    """The archive TorchServe loads at start: the recorded default's, else ``NAME.mar``."""
    state = State.load(settings)
    if state is not None:
        mar = settings.model_store / archive_name(settings.model_name, state.default)
        if mar.is_file():
            return mar
    return settings.mar
