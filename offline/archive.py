"""The model inside a ``.mar``, loaded without TorchServe the way the handler loads it.

The archive is the one artifact: an offline job must score with exactly the file the service
serves, so it reads the manifest's ``serializedFile`` and the model card from the archive,
refuses a model file whose sha256 is not the card's (``ModelCard.verify_model_file``, as the
handler does at start-up) and loads it with the card's runtime (``handlers.runtimes``).
Plain torch and zipfile: Spark executors import this without TorchServe.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from handlers import runtimes
from handlers.model_card import METADATA_FILE, ModelCard, ModelCardError

MANIFEST = "MAR-INF/MANIFEST.json"


@dataclass(frozen=True)
class ArchivedModel:
    card: ModelCard
    model_version: str  # the manifest's, as the service answers it
    runtime: runtimes.Runtime


def read_card(mar: Path) -> tuple[ModelCard, str]:
    """The card and the served version, without loading the model (the driver needs only these)."""
    with zipfile.ZipFile(mar) as archive:
        card = ModelCard.from_dict(json.loads(archive.read(METADATA_FILE)))
        manifest = json.loads(archive.read(MANIFEST))
    return card, str(manifest["model"].get("modelVersion", card.version))


def load(mar: Path, threads: int = 1) -> ArchivedModel:
    """Unpack the model file to a temporary folder, check its sha256 against the card, load it."""
    try:
        card, version = read_card(mar)
        with zipfile.ZipFile(mar) as archive, tempfile.TemporaryDirectory(prefix="mar-") as tmp:
            serialized = json.loads(archive.read(MANIFEST))["model"]["serializedFile"]
            model_file = archive.extract(serialized, tmp)
            card.verify_model_file(model_file)
            runtime = runtimes.load(card.runtime, model_file, threads, autograd=False)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelCardError(f"{mar}: not a model archive with a manifest and a model card ({exc})") from None
    return ArchivedModel(card, version, runtime)
