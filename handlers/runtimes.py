"""Load and call each model variant behind one interface: float32 ``[n, F]`` in, float32 logits out.

The handler picks the loader by the model card's ``runtime`` (never by trying one after the
other), so a .mar serves the variant it was built with and a wrong file fails loudly at start-up.

- ``torchscript``: ``torch.jit.load`` (the default variant, and the int8 one: a scripted module of
  dynamically quantized linear layers).
- ``onnxruntime``: an ONNX Runtime session on the CPU provider with ``handler.torch_threads``
  intra-op threads and one inter-op thread. This module loads it rather than TorchServe's
  BaseHandler, whose session takes every logical CPU (psutil.cpu_count) whatever the config says.
- ``torch.export``: ``torch.export.load(...).module()``; TorchServe 0.12 cannot load a ``.pt2``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Runtime:
    """A loaded model: ``forward`` gives logits; ``differentiable`` is the same forward as a
    torch callable that autograd can go through, or None where the variant has none."""

    name: str
    forward: Forward
    differentiable: Forward | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over each row of ``logits`` [n, C], C-contiguous. Taken along the first dimension
    of the transposed copy: torch's CPU softmax along a last dimension of 3 runs one short loop
    per row, 7x slower than along the first (1,000 rows: 72 vs 10.5 us, 5,000: 324 vs 50 us,
    measured), more than the model's own forward pass; the values agree within 3e-8."""
    return torch.softmax(logits.t().contiguous(), dim=0).t().contiguous()


def load(runtime: str, path: str, threads: int, autograd: bool) -> Runtime:
    """The model file at ``path`` loaded by ``runtime`` (the card's field)."""
    try:
        loader = LOADERS[runtime]
    except KeyError:
        raise ValueError(f"unknown runtime {runtime!r}; known: {sorted(LOADERS)}") from None
    forward = loader(path, threads)
    return Runtime(runtime, forward, forward if autograd else None)


def load_torchscript(path: str, threads: int) -> Forward:
    module: torch.jit.ScriptModule = torch.jit.load(path, map_location="cpu").eval()
    return module


def load_exported(path: str, threads: int) -> Forward:
    module: torch.nn.Module = torch.export.load(path).module()
    return module


class _Deferred(types.ModuleType):
    """A stand-in for a module not imported yet: the first attribute asked of it imports the
    real module (once) and answers from it. Hand-written because the stdlib's LazyLoader
    imports at the next ``import`` statement already (Python 3.11 reads the module's
    ``__spec__`` there, measured), which is exactly the statement to defer."""

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def defer_onnxruntime() -> None:
    """Defer ``import onnxruntime`` in this process until the module is used: TorchServe's
    BaseHandler imports it at module load whether or not the model needs it, which costs every
    worker 18 MiB resident (measured); only ``load_onnx`` (the onnx variant) uses it."""
    if "onnxruntime" not in sys.modules and importlib.util.find_spec("onnxruntime") is not None:
        sys.modules["onnxruntime"] = _Deferred("onnxruntime")


def load_onnx(path: str, threads: int) -> Forward:
    import onnxruntime as ort  # only the onnx variant's workers pay its import

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    (input_name,) = (i.name for i in session.get_inputs())
    output_name = session.get_outputs()[0].name

    def forward(x: torch.Tensor) -> torch.Tensor:
        (logits,) = session.run([output_name], {input_name: x.detach().contiguous().numpy()})
        return torch.from_numpy(logits)

    return forward


LOADERS: dict[str, Callable[[str, int], Forward]] = {
    "torchscript": load_torchscript,
    "onnxruntime": load_onnx,
    "torch.export": load_exported,
}
