"""Package the model file (the card's variant), the handler package, the metadata and the training report into a .mar.

    python -m model.archive [--artifacts artifacts] [--store model_store]

Name and version come from the model card that ``model.export`` wrote (``make archive
VERSION=1.1`` sets them there). The ``handlers`` folder goes into the archive as a package, so the handler imports its
helpers the same way in the repo and inside TorchServe.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from handlers.model_card import METADATA_FILE, ModelCard
from model.train import ARTIFACTS

REPO = Path(__file__).resolve().parent.parent
HANDLER = REPO / "handlers" / "tabular_handler.py"
MODEL_CONFIG = REPO / "serve_config" / "model-config.yaml"
MODEL_STORE = Path("model_store")
BUILD = Path("build/archive")


def archive(
    artifacts: Path = ARTIFACTS, store: Path = MODEL_STORE, build: Path = BUILD, config: Path = MODEL_CONFIG
) -> Path:
    card = ModelCard.load(artifacts / METADATA_FILE)
    card.verify_model_file(artifacts / card.model_file)
    extra = build / "extra"
    shutil.rmtree(build, ignore_errors=True)
    shutil.copytree(HANDLER.parent, extra / "handlers", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(artifacts / METADATA_FILE, extra / METADATA_FILE)
    for name in card.references:  # the training report, so a served model shows how it was made
        shutil.copy2(artifacts / name, extra / name)
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
    return store / f"{card.model_name}.mar"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifacts", type=Path, default=ARTIFACTS)
    parser.add_argument("--store", type=Path, default=MODEL_STORE)
    args = parser.parse_args(argv)
    mar = archive(args.artifacts, args.store)
    print(f"wrote {mar} ({mar.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
