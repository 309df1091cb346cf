"""Package the model file (the card's variant), the handler package, the metadata and the training report into a .mar.

    python -m model.archive [--artifacts artifacts] [--store model_store]

Name and version come from the model card that ``model.export`` wrote (``make archive
VERSION=1.1`` sets them there). It writes ``NAME.mar`` (the latest build) and the same archive as
``NAME-VERSION.mar``, one file per version beside the others (``servectl.versions``); it refuses to
replace a version's archive with another model (other weights or names) unless ``--force``
(``FORCE=1``), so a version number never silently means two models. The test split goes into
the archive too: a rollout's pre-flight checks the served accuracy on it. The ``handlers``
folder goes into the archive as a package, so the handler imports its
helpers the same way in the repo and inside TorchServe.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

from handlers.model_card import METADATA_FILE, ModelCard
from model.train import ARTIFACTS

REPO = Path(__file__).resolve().parent.parent
HANDLER = REPO / "handlers" / "tabular_handler.py"
MODEL_CONFIG = REPO / "serve_config" / "model-config.yaml"
MODEL_STORE = Path("model_store")
BUILD = Path("build/archive")


TEST_SPLIT = "test_split.pt"


class VersionClash(RuntimeError):
    """The store already holds this version with another model."""


def check_version_is_free(card: ModelCard, versioned: Path, model_file: Path) -> None:
    """Refuse to give an existing version's number to a different model: other feature or
    class names, or other weights (compared tensor by tensor: a TorchScript file is not
    byte-reproducible, its sha256 changes with every export of the same weights)."""
    if not versioned.is_file():
        return
    with zipfile.ZipFile(versioned) as old:
        held = ModelCard.from_dict(json.loads(old.read(METADATA_FILE)))
        held_model = old.read(held.model_file)
    same = (held.feature_names, held.class_names) == (card.feature_names, card.class_names) and same_weights(
        torch.jit.load(io.BytesIO(held_model)), torch.jit.load(str(model_file))
    )
    if not same:
        raise VersionClash(
            f"{versioned} already holds version {card.version} of another model (other weights or names): "
            "choose another VERSION, or FORCE=1 to replace it"
        )


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def archive(
    artifacts: Path = ARTIFACTS,
    store: Path = MODEL_STORE,
    build: Path = BUILD,
    config: Path = MODEL_CONFIG,
    force: bool = False,
) -> Path:
    card = ModelCard.load(artifacts / METADATA_FILE)
    card.verify_model_file(artifacts / card.model_file)
    versioned = store / f"{card.model_name}-{card.version}.mar"
    if not force:
        check_version_is_free(card, versioned, artifacts / card.model_file)
    extra = build / "extra"
    shutil.rmtree(build, ignore_errors=True)
    shutil.copytree(HANDLER.parent, extra / "handlers", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(artifacts / METADATA_FILE, extra / METADATA_FILE)
    for name in card.references:  # the training report, so a served model shows how it was made
        shutil.copy2(artifacts / name, extra / name)
    shutil.copy2(artifacts / TEST_SPLIT, extra / TEST_SPLIT)
    (build / "tmp").mkdir(parents=True)
    store.mkdir(parents=True, exist_ok=True)
    # TorchServe's archiver stages files in $TMPDIR/<name>: keep that inside build/
    env = dict(os.environ, TMPDIR=str((build / "tmp").resolve()))
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    subprocess.run(
        [
            str(archiver),
            "--model-name",
            card.model_name,
            "--version",
            card.version,
            "--serialized-file",
            str(artifacts / card.model_file),
            "--handler",
            str(HANDLER),
            "--extra-files",
            str(extra),
            "--config-file",
            str(config),
            "--export-path",
            str(store),
            "--force",
        ],
        check=True,
        env=env,
    )
    mar = store / f"{card.model_name}.mar"
    shutil.copy2(mar, versioned)
    return mar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifacts", type=Path, default=ARTIFACTS)
    parser.add_argument("--store", type=Path, default=MODEL_STORE)
    parser.add_argument("--force", action="store_true", help="replace a version's archive that holds another model")
    args = parser.parse_args(argv)
    try:
        mar = archive(args.artifacts, args.store, force=args.force)
    except VersionClash as exc:
        print(f"archive: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {mar} and its versioned copy ({mar.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
