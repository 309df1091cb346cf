"""The model inside a ``.mar``, loaded without TorchServe the way the handler loads it.

The archive is the one artifact: an offline job must score with exactly the file the service
serves, so it reads the manifest's ``serializedFile`` and the model card from the archive,
refuses a model file whose sha256 is not the card's (``ModelCard.verify_model_file``, as the
handler does at start-up), loads it with the card's runtime (``handlers.runtimes``) and builds
the request contract from the card and the archive's own ``model-config.yaml`` (``request_schema``,
the handler's function: the same input bounds as the served model).
Plain torch and zipfile: Spark executors import this without TorchServe.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from common.model_card import METADATA_FILE, ModelCard, ModelCardError
from handlers import runtimes
from handlers.contract import Schema
from handlers.contract.model_schema import request_schema
from handlers.settings import HandlerSettings, SettingsError, from_config

MANIFEST = "MAR-INF/MANIFEST.json"


@dataclass(frozen=True)
class Archive:
    """What the driver reads from an archive without loading the model."""

    card: ModelCard
    model_version: str  # the manifest's, as the service answers it
    handler_settings: HandlerSettings  # the archive's model-config.yaml ``handler`` section, as served

    def schema(self, max_rows: int) -> Schema:
        """The service's request contract (``request_schema``: features, input bounds) with a
        row limit of ``max_rows``: the limit is a request's, a table's batches choose their own."""
        return request_schema(self.card, max_rows, self.handler_settings.input_range_widths)


@dataclass(frozen=True)
class ArchivedModel:
    archive: Archive
    runtime: runtimes.Runtime


def read(mar: Path) -> Archive:
    """The card, the served version and the handler's settings of an archive."""
    try:
        with zipfile.ZipFile(mar) as archive:
            manifest = json.loads(archive.read(MANIFEST))["model"]
            card = ModelCard.from_dict(json.loads(archive.read(METADATA_FILE)))
            config = archive.read(manifest["configFile"]) if manifest.get("configFile") else b"{}"
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelCardError(f"{mar}: not a model archive with a manifest and a model card ({exc})") from None
    try:  # the handler's own check: a section the served model would refuse is refused here too
        handler = from_config(yaml.safe_load(config) or {})
    except SettingsError as exc:
        raise ModelCardError(f"{mar}: {exc}") from None
    return Archive(card, str(manifest.get("modelVersion", card.version)), handler)


def load(mar: Path, threads: int = 1) -> ArchivedModel:
    """Unpack the model file to a temporary folder, check its sha256 against the card, load it."""
    info = read(mar)
    with zipfile.ZipFile(mar) as archive, tempfile.TemporaryDirectory(prefix="mar-") as tmp:
        serialized = json.loads(archive.read(MANIFEST))["model"]["serializedFile"]
        model_file = archive.extract(serialized, tmp)
        info.card.verify_model_file(model_file)
        runtime = runtimes.load(info.card.runtime, model_file, threads, autograd=False)
    return ArchivedModel(info, runtime)
