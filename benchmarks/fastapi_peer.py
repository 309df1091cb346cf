"""The lean FastAPI peer of ``make bench``: what a careful team writes without TorchServe.

    uvicorn benchmarks.fastapi_peer:app --workers 2 --loop uvloop --http httptools

One ``async def`` endpoint reading the raw body: orjson in and out, numpy straight from the
parsed lists (no pydantic model, no validation per number), the model called in the event
loop (a forward pass of a small model is shorter than a thread hop), one torch thread per
uvicorn worker. ``application/x-npy`` bodies are read with numpy and answered as .npy when
asked (``Accept: application/x-npy``), else labels and probabilities as JSON. No batching:
FastAPI has none of its own; each worker answers one request at a time.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request, Response

from benchmarks.peer_model import NPY, PeerModel, npy_bytes, npy_load, rows

MODEL = PeerModel()
app = FastAPI()
JSON = "application/json"


@app.post("/predict")
async def predict(request: Request) -> Response:
    body = await request.body()
    try:
        if request.headers.get("content-type", "").startswith(NPY):
            x = npy_load(body)
        else:
            x = rows(orjson.loads(body)["instances"])
    except (ValueError, KeyError, TypeError) as exc:
        return Response(orjson.dumps({"code": 400, "message": str(exc)}), 400, media_type=JSON)
    p = MODEL.probabilities(x)
    if request.headers.get("accept", "").startswith(NPY):
        return Response(npy_bytes(p), media_type=NPY)
    doc = MODEL.head | {"labels": MODEL.labels(p), "probabilities": p}
    return Response(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), media_type=JSON)
