"""Build each model variant from the eager network, and the gates every variant must pass.

The variants themselves (file name, runtime, autograd) are listed once, in
``common.model_card.VARIANTS``; this module knows how to write each file and how close to
the eager model its answers must be. Parity is checked on the file as the handler loads it
(``handlers.runtimes``), not on the in-memory object.

Why these tools, with torch 2.13.0:
- int8: ``torch.ao.quantization.quantize_dynamic`` (deprecated, still in torch 2.13), scripted,
  so the TorchScript loader serves it unchanged. torchao 0.18 is the successor, but its int8
  weights are tensor subclasses that TorchScript cannot script, and its CPU speed-ups come
  through ``torch.compile``; the handler would need a third loader for a 2-layer MLP.
- onnx: ``torch.onnx.export(dynamo=True)`` (the default exporter in 2.13, which needs
  onnxscript), one self-contained file (external_data=False, so its sha256 covers the weights),
  the batch axis dynamic; the normalisation buffers are constants inside the graph.
- export: ``torch.export`` to an ExportedProgram (.pt2), run as ``.module()``. AOTInductor is
  not used: it needs a C++ compiler at export time and gives a .so tied to the machine's CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from common.model_card import VARIANTS, Variant
from handlers import runtimes
from model.network import TabularMLP

Builder = Callable[[TabularMLP, torch.Tensor, Path], None]


class GateError(RuntimeError):
    """A variant missed one of its gates; the message names the variant and the gate."""

    def __init__(self, variant: str, gate: str, detail: str) -> None:
        super().__init__(f"variant {variant}: the {gate} gate failed: {detail}")
        self.variant = variant
        self.gate = gate


def batch_dim() -> dict[int, torch.export.Dim]:
    return {0: torch.export.Dim("batch", min=1, max=1 << 20)}


def build_torchscript(eager: TabularMLP, example: torch.Tensor, path: Path) -> None:
    torch.jit.script(eager).save(str(path))


def build_int8(eager: TabularMLP, example: torch.Tensor, path: Path) -> None:
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(eager), {nn.Linear}, dtype=torch.qint8)
    torch.jit.script(quantized).save(str(path))


def build_onnx(eager: TabularMLP, example: torch.Tensor, path: Path) -> None:
    torch.onnx.export(
        eager,
        (example,),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_shapes=(batch_dim(),),
        dynamo=True,
        external_data=False,
        verbose=False,
    )


def build_export(eager: TabularMLP, example: torch.Tensor, path: Path) -> None:
    torch.export.save(torch.export.export(eager, (example,), dynamic_shapes=(batch_dim(),)), str(path))


@dataclass(frozen=True)
class Recipe:
    """How to build one variant, and how far its probabilities may stray from eager mode."""

    build: Builder
    tolerance: float


# Tolerances on the largest |probability difference| over the test split. The float variants
# differ from eager by rounding only (measured: TorchScript and torch.export 0, ONNX Runtime
# about 2e-7); int8 rounds weights and activations to 8 bits (measured on the synthetic test
# split, seed 0, minmax scaling: 0.034 scored as one batch, 0.025 row by row, the eager label for
# all 150 rows; 0.057 with standard scaling), so its gate is looser and the accuracy gate carries
# the weight. Dynamic quantization scales the activations by the range of the whole batch, so an
# int8 answer also depends on the rows it is batched with (measured: up to 0.037 between a row
# alone and in a batch; 0.079 with standard scaling).
RECIPES = {
    "torchscript": Recipe(build_torchscript, 1e-6),
    "int8": Recipe(build_int8, 0.1),
    "onnx": Recipe(build_onnx, 1e-5),
    "export": Recipe(build_export, 1e-6),
}


def batch_atol(name: str) -> float:
    """How far two answers for the same row may differ when it is batched differently: the last
    bits for the float variants (tests.conftest.PROBABILITY_ATOL); for int8 both may stray from
    eager by up to its tolerance, so twice that."""
    return 2 * RECIPES[name].tolerance if name == "int8" else 1e-6


def variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise GateError(name, "variant", f"unknown variant; choose one of {sorted(VARIANTS)}")
    return VARIANTS[name]


def build(name: str, eager: TabularMLP, example: torch.Tensor, out: Path) -> Path:
    """Write variant ``name`` into ``out``; its path."""
    path = out / variant(name).model_file
    RECIPES[name].build(eager.eval(), example, path)
    return path


def load(name: str, path: Path, threads: int = 1) -> runtimes.Runtime:
    """The variant's file loaded exactly as the handler loads it."""
    v = variant(name)
    return runtimes.load(v.runtime, str(path), threads, autograd=v.autograd)


def probabilities(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.softmax(forward(x), dim=1)


def check_parity(name: str, eager: nn.Module, loaded: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    """Largest absolute probability difference from eager mode; GateError over the variant's tolerance."""
    diff = float((probabilities(eager, x) - probabilities(loaded, x)).abs().max())
    tolerance = RECIPES[name].tolerance
    if not diff <= tolerance:
        raise GateError(name, "parity", f"probabilities differ from the eager model by {diff:.3g} > {tolerance:g}")
    return diff


def check_accuracy(name: str, accuracy: float, min_accuracy: float) -> None:
    if not accuracy >= min_accuracy:
        raise GateError(
            name, "accuracy", f"test accuracy {accuracy:.4f} is under the gate {min_accuracy:.4f} (MIN_ACCURACY)"
        )
