"""What every peer of ``make bench`` serves: the model file the service serves (the model card's,
``artifacts/``), one torch thread per process, and the same answer content as the service
(labels and class probabilities; the service's columnar answer). Plain torch and numpy, so the
Triton peer's own venv (requirements-triton.lock: pytriton needs numpy < 2) imports it too."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from common.model_card import METADATA_FILE, ModelCard
from handlers import runtimes

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"
NPY = "application/x-npy"
# the peers' batching and processes, the service's (serve_config/model-config.yaml), passed by bench.py
WORKERS = int(os.environ.get("PEER_WORKERS", "2"))
BATCH_SIZE = int(os.environ.get("PEER_BATCH_SIZE", "64"))
BATCH_DELAY_S = float(os.environ.get("PEER_BATCH_DELAY_MS", "1")) / 1000


class PeerModel:
    """The scripted model with softmax, and its answer as labels and probabilities."""

    def __init__(self, artifacts: Path = ARTIFACTS) -> None:
        torch.set_num_threads(1)
        self.card = ModelCard.load(artifacts / METADATA_FILE)
        self.model = torch.jit.load(str(artifacts / self.card.model_file), map_location="cpu").eval()
        self.names = list(self.card.class_names)
        self.head = {"model_name": self.card.model_name, "model_version": self.card.version,
                     "class_names": self.names}

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return runtimes.probabilities(self.model(torch.from_numpy(x))).numpy()  # the service's softmax

    def labels(self, probabilities: np.ndarray) -> list[str]:
        names = self.names
        return [names[i] for i in probabilities.argmax(axis=1).tolist()]


def rows(instances: object) -> np.ndarray:
    """``{"instances": [[...], ...]}``'s lists as a float32 array (numpy checks the shape)."""
    x = np.asarray(instances, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"instances must be rows of numbers, got {x.ndim} dimensions")
    return x


def npy_load(body: bytes) -> np.ndarray:
    return np.ascontiguousarray(np.load(io.BytesIO(body), allow_pickle=False), dtype=np.float32)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
