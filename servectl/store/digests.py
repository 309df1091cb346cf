"""Each built archive's sha256, recorded outside its model store and checked before TorchServe
sees the archive.

Why outside: the model card's sha256 lives inside the same ``.mar`` and covers the model file
only, and TorchServe runs the archive's handler code before the handler can check anything, so
an archive changed in the store (its handler, its card, its model file) would run. The record
is ``<store>.sha256`` beside the store folder (``model_store.sha256`` for ``model_store/``), in
``sha256sum`` format (``cd model_store && sha256sum -c ../model_store.sha256`` checks it by hand).
``model.archive`` writes it for every archive it builds; ``servectl`` refuses to start or
register an archive whose bytes do not hash to its record, or that has none.

It is a check against an archive changed after it was built (a copied-in file, a swapped
volume), not against someone who can write the record too: protect both the same way.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from common.model_card import sha256_of
from servectl.errors import ServeError

LINE = re.compile(r"^([0-9a-f]{64}) [ *](\S+)$")


def manifest_of(store: Path) -> Path:
    """Where the digests of ``store``'s archives are recorded: beside the folder, not in it."""
    store = Path(store).resolve()
    return store.with_name(f"{store.name}.sha256")


def read(store: Path) -> dict[str, str]:
    """Archive file name -> recorded sha256 ({} when nothing is recorded)."""
    try:
        text = manifest_of(store).read_text()
    except FileNotFoundError:
        return {}
    found = (LINE.match(line) for line in text.splitlines())
    return {m.group(2): m.group(1) for m in found if m}


def record(store: Path, archives: Iterable[Path]) -> Path:
    """Record the sha256 of each archive (files of ``store``), keeping the others' (atomically)."""
    recorded = read(store)
    recorded.update({Path(a).name: sha256_of(a) for a in archives})
    path = manifest_of(store)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(recorded.items())))
    os.replace(tmp, path)
    return path


def verify(archive: Path) -> str:
    """The archive's sha256 when it is the one recorded for it; ServeError otherwise."""
    archive = Path(archive)
    manifest = manifest_of(archive.parent)
    want = read(archive.parent).get(archive.name)
    if want is None:
        raise ServeError(
            f"{archive}: no digest recorded for it in {manifest}: servectl serves only archives that "
            "model.archive built and recorded (delete it and rebuild it with 'make archive')"
        )
    actual = sha256_of(archive)
    if actual != want:
        raise ServeError(
            f"{archive}: sha256 {actual} is not the {want} recorded in {manifest} when it was built: "
            "the archive was changed after it was built, refusing to serve it (delete it and rebuild it with "
            "'make archive')"
        )
    return actual


def copy(archive: Path, store: Path) -> Path:
    """Copy a verified archive into another store with its record (a test's or benchmark's store)."""
    verify(archive)
    Path(store).mkdir(parents=True, exist_ok=True)
    target = Path(store) / Path(archive).name
    shutil.copy2(archive, target)
    record(store, [target])
    return target
