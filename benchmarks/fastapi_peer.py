"""The FastAPI + uvicorn peer of ``make bench``: the same scripted model served the way a
team would write it without TorchServe, to put the project's numbers beside a common
alternative measured in the same run.

    uvicorn benchmarks.fastapi_peer:app --workers 2     # PEER_MODEL=artifacts/model.pt

A pydantic request model (rows of numbers), one forward pass per request with one torch
thread per worker (as the project's workers), the row answer encoded by orjson. No
batching, no validation beyond pydantic's, no metrics: the peer is a floor, not a product.
"""

from __future__ import annotations

import os

import torch
from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
from pydantic import BaseModel

from common.model_card import METADATA_FILE, ModelCard
from servectl.config.settings import REPO

torch.set_num_threads(1)
ARTIFACTS = REPO / "artifacts"
CARD = ModelCard.load(ARTIFACTS / METADATA_FILE)
MODEL = torch.jit.load(os.environ.get("PEER_MODEL", str(ARTIFACTS / CARD.model_file)), map_location="cpu").eval()
NAMES = CARD.class_names

app = FastAPI(default_response_class=ORJSONResponse)


class Rows(BaseModel):
    instances: list[list[float]]


@app.post("/predict")
def predict(body: Rows) -> ORJSONResponse:
    with torch.inference_mode():
        probabilities = torch.softmax(MODEL(torch.tensor(body.instances, dtype=torch.float32)), dim=1)
    ids = probabilities.argmax(dim=1).tolist()
    return ORJSONResponse({
        "model_name": CARD.model_name,
        "model_version": CARD.version,
        "predictions": [
            {"label": NAMES[c], "class_id": c, "probabilities": dict(zip(NAMES, row))}
            for c, row in zip(ids, probabilities.tolist())
        ],
    })
