"""Package the model file (the card's variant), the handler package, the metadata and the training report into a .mar.

    python -m model.archive [--artifacts artifacts] [--store model_store]

Name and version come from the model card that ``model.export`` wrote (``make archive
VERSION=1.1`` sets them there). It writes ``NAME.mar`` (the latest build) and the same archive as
``NAME-VERSION.mar``, one file per version beside the others (``servectl.store.versions``); it refuses to
give a version's number to another training (the card's ``training_sha256``: other weights, names
or training statistics) unless ``--force`` (``FORCE=1``), so a version number never silently
means two models, while any variant of the same training may take it (``VARIANT=int8`` after a
default build, and back). Each file is written beside its place and renamed over it, so a reader
(TorchServe registering it) never sees half an archive, and its sha256 is recorded outside the
store (``servectl.store.digests``), where servectl checks it before TorchServe runs the archive's code.
The test split goes into the archive too: a rollout's pre-flight checks the served accuracy on
it. The ``handlers`` and ``common`` folders go into the archive as packages, so the handler imports
its helpers the same way in the repo and inside TorchServe.
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
from collections.abc import Callable
from pathlib import Path

import torch

from common.model_card import METADATA_FILE, ModelCard
from model.train import ARTIFACTS
from servectl.store import digests

REPO = Path(__file__).resolve().parent.parent
HANDLER = REPO / "handlers" / "tabular_handler.py"
COMMON = REPO / "common"
MODEL_CONFIG = REPO / "serve_config" / "model-config.yaml"
MODEL_STORE = Path("model_store")
BUILD = Path("build/archive")


TEST_SPLIT = "test_split.pt"


class VersionClash(RuntimeError):
    """The store already holds this version with another training."""


def check_version_is_free(card: ModelCard, versioned: Path, model_file: Path) -> None:
    """Refuse to give an existing version's number to another training: the question is whether
    the store's archive was built from the same training (the card's ``training_sha256``), not
    from the same file: a variant of it (int8, onnx, export) is the same model, packed otherwise."""
    if not versioned.is_file():
        return
    with zipfile.ZipFile(versioned) as old:
        held = ModelCard.from_dict(json.loads(old.read(METADATA_FILE)))
        same = same_training(held, card, lambda: old.read(held.model_file), model_file)
    if not same:
        raise VersionClash(
            f"{versioned} already holds version {card.version} of another training (other weights, names or "
            f"training data; training_sha256 {held.extra.get('training_sha256', 'not recorded')}): "
            "choose another VERSION, or FORCE=1 to replace it"
        )


def same_training(held: ModelCard, card: ModelCard, held_model: Callable[[], bytes], model_file: Path) -> bool:
    """Whether two cards come from one training. An archive built before the card recorded its
    training is compared the old way: TorchScript weights tensor by tensor (both TorchScript)."""
    if (held.feature_names, held.class_names) != (card.feature_names, card.class_names):
        return False
    if "training_sha256" in held.extra:
        return bool(held.extra["training_sha256"] == card.extra.get("training_sha256"))
    both_scripted = held.runtime == card.runtime == "torchscript"
    return both_scripted and same_weights(torch.jit.load(io.BytesIO(held_model())), torch.jit.load(str(model_file)))


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def place(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` whole: written beside it, then renamed over it (atomic on one
    file system), so whoever opens ``dst`` reads the old archive or the new one, never a mix."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def archive(
    artifacts: Path = ARTIFACTS,
    store: Path = MODEL_STORE,
    build: Path = BUILD,
    config: Path = MODEL_CONFIG,
    force: bool = False,
    latest: bool = True,
) -> Path:
    """Build the archive into ``store``: ``NAME-VERSION.mar`` and, with ``latest``, ``NAME.mar``
    (a candidate version built beside a serving default leaves ``NAME.mar`` alone); the path
    of the last one written."""
    card = ModelCard.load(artifacts / METADATA_FILE)
    card.verify_model_file(artifacts / card.model_file)
    versioned = store / f"{card.model_name}-{card.version}.mar"
    if not force:
        check_version_is_free(card, versioned, artifacts / card.model_file)
    extra = build / "extra"
    shutil.rmtree(build, ignore_errors=True)
    for package in (HANDLER.parent, COMMON):  # the handler imports common/ (model card, load status)
        shutil.copytree(package, extra / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(artifacts / METADATA_FILE, extra / METADATA_FILE)
    for name in card.references:  # the training report, so a served model shows how it was made
        shutil.copy2(artifacts / name, extra / name)
    shutil.copy2(artifacts / TEST_SPLIT, extra / TEST_SPLIT)
    (build / "tmp").mkdir(parents=True)
    store.mkdir(parents=True, exist_ok=True)
    # TorchServe's archiver stages files in $TMPDIR/<name>: keep that inside build/
    env = dict(os.environ, TMPDIR=str((build / "tmp").resolve()))
    staged = build / "out"  # the archiver writes in place: never into the store
    staged.mkdir()
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
            str(staged),
        ],
        check=True,
        env=env,
    )
    built = staged / f"{card.model_name}.mar"
    written = [versioned, *([store / built.name] if latest else [])]
    for target in written:
        place(built, target)
    digests.record(store, written)
    return written[-1]


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
