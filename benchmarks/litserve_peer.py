"""The LitServe peer of ``make bench``: Lightning's LitServe with its own batching on, the same
model, the service's worker count and batch settings (``PEER_WORKERS``, ``PEER_BATCH_SIZE``,
``PEER_BATCH_DELAY_MS``, from serve_config/model-config.yaml through bench.py).

    python -m benchmarks.litserve_peer --port 8000

``workers_per_device`` inference processes on the CPU, ``max_batch_size`` requests per batch,
``batch_timeout`` to fill one; LitServe's ``fast_queue`` (ZeroMQ between the HTTP server and the
workers) on. A batch's requests are concatenated row-wise for one forward pass (so 1-row and
1,000-row requests share batches), and each request's answer is orjson bytes in a Response:
labels and probabilities, the service's content. LitServe reads every body with
``request.json()`` (litserve/server.py, ``_prepare_request``), so it has no .npy path.
"""

# no `from __future__ import annotations`: LitServe reads decode_request's annotation as a type

import argparse

import litserve as ls
import numpy as np
import orjson
from fastapi import Request, Response

from benchmarks.peer_model import BATCH_DELAY_S, BATCH_SIZE, WORKERS, PeerModel, rows


class TabularAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = PeerModel()

    def decode_request(self, request: Request) -> np.ndarray:
        # Request: LitServe's default, the body parsed by request.json(); what arrives is the document
        return rows(request["instances"])

    def batch(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return inputs  # predict concatenates, so requests of any row count share a batch

    def predict(self, x: list[np.ndarray]) -> list[np.ndarray]:
        p = self.model.probabilities(np.concatenate(x) if len(x) > 1 else x[0])
        return np.split(p, np.cumsum([len(a) for a in x[:-1]])) if len(x) > 1 else [p]

    def unbatch(self, output: list[np.ndarray]) -> list[np.ndarray]:
        return output

    def encode_response(self, output: np.ndarray) -> Response:
        doc = self.model.head | {"labels": self.model.labels(output), "probabilities": output}
        return Response(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    api = TabularAPI(max_batch_size=BATCH_SIZE, batch_timeout=BATCH_DELAY_S)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=WORKERS, fast_queue=True,
                          track_requests=False)
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, log_level="warning",
               generate_client_file=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
