"""The Triton peer of ``make bench``: NVIDIA's Triton Inference Server (the ``tritonserver``
binary that PyPI's ``nvidia-pytriton`` bundles) on CPU, with Triton's dynamic batcher, serving
the same model through a Python model function (pytriton's ``@batch``).

    build/triton-venv/bin/python -m benchmarks.triton_peer --http-port 8000

Runs in a venv of its own (``requirements-triton.lock``; ``make bench`` builds it in
build/triton-venv): pytriton 0.7 needs numpy < 2, the project pins numpy 2. Clients speak
Triton's protocol (KServe v2, POST /v2/models/tabular/infer): JSON tensors, or the binary tensor
extension (``Inference-Header-Content-Length``). Answers: ``probabilities`` (FP32, rows x
classes) and ``labels`` (BYTES), the same content as the service's.
"""

from __future__ import annotations

import argparse

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from benchmarks.peer_model import BATCH_DELAY_S, WORKERS, PeerModel

MODEL_NAME = "tabular"
# Triton's max_batch_size counts rows, not requests: a 1,000-row request must fit in one batch
MAX_BATCH_ROWS = 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    args = p.parse_args(argv)
    model = PeerModel()
    names = np.array([n.encode() for n in model.names], dtype=object)

    def instance() -> object:
        @batch
        def infer(x: np.ndarray) -> dict[str, np.ndarray]:
            probabilities = model.probabilities(np.ascontiguousarray(x, dtype=np.float32))
            return {"probabilities": probabilities, "labels": names[probabilities.argmax(axis=1)].reshape(-1, 1)}
        return infer

    config = TritonConfig(http_address="127.0.0.1", http_port=args.http_port, grpc_address="127.0.0.1",
                          grpc_port=args.grpc_port, metrics_port=args.metrics_port, log_verbose=0)
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=[instance() for _ in range(WORKERS)],  # model instances, as many as the service's workers
            inputs=[Tensor(name="x", dtype=np.float32, shape=(len(model.card.feature_names),))],
            outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(len(model.names),)),
                     Tensor(name="labels", dtype=bytes, shape=(1,))],
            config=ModelConfig(max_batch_size=MAX_BATCH_ROWS,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=int(BATCH_DELAY_S * 1e6))),
            strict=False,
        )
        triton.serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
