"""The artifact contract: one metadata JSON that names everything.

Export writes it, the handler, the client and the tests read it. Nothing else keeps a
copy of the feature or class lists. Plain Python (no torch) so a client can import it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

METADATA_FILE = "metadata.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Variant:
    """One way the trained network is saved and run (README "Model variants").

    ``runtime`` names the loader in ``handlers.runtimes``; ``autograd`` says whether the loaded
    model can be differentiated, which explanations (handlers/explain.py) need.
    """

    name: str
    model_file: str
    runtime: str
    autograd: bool


# The one table of variants: export writes one of them, the card records which, the handler
# loads it with the card's runtime. The default stays TorchScript (today's artifact).
VARIANTS = {
    v.name: v
    for v in (
        Variant("torchscript", "model.pt", "torchscript", autograd=True),
        # a scripted module of dynamically quantized linear layers: their int8 kernels have no backward
        Variant("int8", "model-int8.pt", "torchscript", autograd=False),
        Variant("onnx", "model.onnx", "onnxruntime", autograd=False),
        Variant("export", "model.pt2", "torch.export", autograd=True),
    )
}
DEFAULT_VARIANT = "torchscript"


class ModelCardError(ValueError):
    """The metadata JSON is missing a field or contradicts itself."""


@dataclass(frozen=True)
class ModelCard:
    model_name: str
    version: str
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    normalisation: dict[str, list[float]]  # {"mean": [...], "std": [...]}, feature order
    training_range: dict[str, list[float]]  # {"min": [...], "max": [...]}, feature order
    metrics: dict[str, Any]
    torch_version: str
    created_at: str
    model_file: str
    sha256: str
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    # which variant the model file is and what runs it (a card without them predates variants)
    variant: str = DEFAULT_VARIANT
    runtime: str = VARIANTS[DEFAULT_VARIANT].runtime
    # files of the training report (report.md first), packed beside the card in the .mar
    references: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.feature_names)
        if n == 0 or len(set(self.feature_names)) != n:
            raise ModelCardError("feature_names must be non-empty and unique")
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            raise ModelCardError("class_names must hold at least 2 unique names")
        for group, keys in (("normalisation", ("mean", "std")), ("training_range", ("min", "max"))):
            stats = getattr(self, group)
            for key in keys:
                if len(stats.get(key, ())) != n:
                    raise ModelCardError(f"{group}.{key} must have one value per feature ({n})")
        known = VARIANTS.get(self.variant)
        if known is None or known.runtime != self.runtime:
            raise ModelCardError(
                f"variant {self.variant!r} with runtime {self.runtime!r} is not one of "
                + ", ".join(f"{v.name} ({v.runtime})" for v in VARIANTS.values())
            )

    @property
    def variant_info(self) -> Variant:
        """The variant's row of the table: its runtime and whether it has autograd."""
        return VARIANTS[self.variant]

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["feature_names"] = list(self.feature_names)
        data["class_names"] = list(self.class_names)
        data["references"] = list(self.references)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        try:
            fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
            fields["feature_names"] = tuple(data["feature_names"])
            fields["class_names"] = tuple(data["class_names"])
            fields["references"] = tuple(data.get("references", ()))
            return cls(**fields)
        except (KeyError, TypeError) as exc:
            raise ModelCardError(f"metadata is missing or has a malformed field: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def verify_model_file(self, path: str | Path) -> None:
        """Refuse a scripted file whose sha256 is not the one export recorded."""
        actual = sha256_of(path)
        if actual != self.sha256:
            raise ModelCardError(
                f"{path}: sha256 {actual} does not match the metadata ({self.sha256}); "
                "the model file was changed after export, refusing to serve it"
            )


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
