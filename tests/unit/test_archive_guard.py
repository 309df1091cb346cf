"""``model.archive`` in-process: the version guard asks whether the store's archive holds the
same training (any variant of it may take its version; another training may not), the store's
files are replaced whole (never rewritten in place), and each archive's digest is recorded
outside the store for servectl to check."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from common.model_card import VARIANTS, sha256_of
from model import archive, export
from servectl.errors import ServeError
from servectl.store import digests, versions


@pytest.fixture
def work(tiny_artifacts, tmp_path) -> Path:
    out = tmp_path / "artifacts"
    shutil.copytree(tiny_artifacts, out)
    export.export("tiny", "0.1", out)  # the default variant, whatever an earlier test left here
    return out


def other_training(src: Path, dst: Path) -> Path:
    """The same data and names, other weights: another model."""
    shutil.copytree(src, dst)
    checkpoint = torch.load(dst / "checkpoint.pt", weights_only=True)
    checkpoint["state_dict"]["out.bias"] += 1.0
    torch.save(checkpoint, dst / "checkpoint.pt")
    return dst


def test_every_variant_of_the_same_training_may_take_its_version_and_back(work, tmp_path):
    """make archive, then VARIANT=int8, onnx, export and back to torchscript, all version 0.1:
    one training, so no clash (the old guard compared TorchScript weights and refused int8)."""
    store, build = tmp_path / "store", tmp_path / "build"
    archive.archive(work, store, build)
    for variant in [*(v for v in VARIANTS if v != "torchscript"), "torchscript"]:
        card = export.export("tiny", "0.1", work, variant)
        archive.archive(work, store, build)
        held = versions.card_of(store / "tiny-0.1.mar")
        assert (held.variant, held.sha256) == (variant, card.sha256)
        assert held.extra["training_sha256"] == card.extra["training_sha256"]


@pytest.mark.parametrize("variant", ["torchscript", "onnx"])
def test_another_training_under_a_used_version_is_refused_unless_forced(work, tmp_path, variant):
    store, build = tmp_path / "store", tmp_path / "build"
    archive.archive(work, store, build)
    other = other_training(work, tmp_path / "other")
    card = export.export("tiny", "0.1", other, variant)
    with pytest.raises(archive.VersionClash, match="another training.*FORCE=1"):
        archive.archive(other, store, build)
    assert versions.card_of(store / "tiny-0.1.mar").variant == "torchscript"  # untouched
    archive.archive(other, store, build, force=True)
    assert versions.card_of(store / "tiny-0.1.mar").sha256 == card.sha256


def test_a_retraining_with_the_same_seed_is_the_same_training(work, tmp_path):
    """The fingerprint is the weights and the card's training facts, not file bytes: a new
    export (TorchScript bytes differ every time) keeps it."""
    first = export.export("tiny", "0.1", work)
    again = export.export("tiny", "0.1", work)
    assert first.extra["training_sha256"] == again.extra["training_sha256"]
    other = export.export("tiny", "0.1", other_training(work, tmp_path / "other"))
    assert other.extra["training_sha256"] != first.extra["training_sha256"]


def test_the_store_files_are_replaced_whole_never_rewritten_in_place(work, tmp_path):
    """A reader that opened an archive (TorchServe registering it) keeps reading the whole old
    file while a new build lands: each file is written beside and renamed over."""
    store, build = tmp_path / "store", tmp_path / "build"
    archive.archive(work, store, build)
    names = ["tiny.mar", "tiny-0.1.mar"]
    before = {n: (store / n).read_bytes() for n in names}
    held = {n: open(store / n, "rb") for n in names}  # noqa: SIM115 (closed below)
    try:
        other = other_training(work, tmp_path / "other")
        export.export("tiny", "0.1", other)
        archive.archive(other, store, build, force=True)
        for name in names:
            held[name].seek(0)
            assert held[name].read() == before[name], f"{name} was rewritten in place"
            assert (store / name).read_bytes() != before[name]
            assert os.fstat(held[name].fileno()).st_ino != (store / name).stat().st_ino
            with zipfile.ZipFile(store / name) as mar:
                assert mar.testzip() is None
    finally:
        for fh in held.values():
            fh.close()
    assert sorted(p.name for p in store.iterdir()) == sorted(names)  # no temporary file left behind


def test_each_archive_digest_is_recorded_outside_the_store(work, tmp_path):
    store = tmp_path / "store"
    archive.archive(work, store, tmp_path / "build")
    manifest = tmp_path / "store.sha256"
    assert digests.manifest_of(store) == manifest and manifest.parent != store
    lines = manifest.read_text().splitlines()
    assert lines == sorted(f"{sha256_of(store / n)}  {n}" for n in ("tiny.mar", "tiny-0.1.mar"))
    assert digests.verify(store / "tiny.mar") == sha256_of(store / "tiny.mar")
    data = bytearray((store / "tiny.mar").read_bytes())
    data[len(data) // 2] ^= 0x01
    (store / "tiny.mar").write_bytes(bytes(data))
    with pytest.raises(ServeError, match="was changed after it was built"):
        digests.verify(store / "tiny.mar")
    shutil.copy2(store / "tiny-0.1.mar", store / "tiny-0.2.mar")
    with pytest.raises(ServeError, match="no digest recorded"):
        digests.verify(store / "tiny-0.2.mar")


def test_a_candidate_built_beside_the_default_leaves_name_mar_and_its_record_alone(work, tmp_path):
    """latest=False (a version built for a rollout next to a serving default): only
    NAME-VERSION.mar is written, and both archives still pass servectl's check."""
    store, build = tmp_path / "store", tmp_path / "build"
    archive.archive(work, store, build)
    before = (store / "tiny.mar").read_bytes()
    other = other_training(work, tmp_path / "other")
    export.export("tiny", "0.2", other)
    assert archive.archive(other, store, build, latest=False) == store / "tiny-0.2.mar"
    assert (store / "tiny.mar").read_bytes() == before
    for name in ("tiny.mar", "tiny-0.1.mar", "tiny-0.2.mar"):
        digests.verify(store / name)
    assert versions.card_of(store / "tiny-0.2.mar").version == "0.2"
