"""ONNX exports that look like the ones users have: the official formulation, weights under checkpoint names.

The ``GPEN-BFR-*.onnx`` files of ReActor and FaceFusion are exports of the official network. Its
code cannot be used here, so :class:`CheckpointModule` wraps the independent literal formulation of
``tests/reference_gpen.py`` (per-sample modulated weights, grouped convolutions) in a module whose
parameters and buffers carry the checkpoint's key names, which is what the official module has.

The legacy TorchScript exporter reads tensor sizes taken from ``x.shape`` as traced values; in the
literal formulation they size the per-sample weights of the grouped convolutions, whose shape then
becomes unknown and the export fails ("Unsupported: ONNX export of convolution for kernel of unknown
shape"), so the literal formulation reads those sizes as Python ints (what a fixed-shape export
bakes in anyway). Dynamic-batch
exports of this formulation are impossible with any exporter: ONNX ``Conv`` needs ``group`` (the
batch size here) as a constant, which is why the files in circulation have a fixed batch of 1.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn

import reference_gpen


class CheckpointModule(nn.Module):
    """``reference_forward`` over parameters/buffers named exactly like the checkpoint's keys."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for key, value in state.items():
            *path, leaf = key.split(".")
            mod = self
            for part in path:
                if part not in mod._modules:
                    mod.add_module(part, nn.Module())
                mod = mod._modules[part]
            if key.endswith("kernel"):
                mod.register_buffer(leaf, value.detach().clone())
            else:
                mod.register_parameter(leaf, nn.Parameter(value.detach().clone(), requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sd = dict(self.named_parameters())
        sd.update(self.named_buffers())
        return reference_gpen.reference_forward(sd, x)


class Prefixed(nn.Module):
    """Holds a network as attribute ``net``, so that exported weight names get the prefix ``net.``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def export(module: nn.Module, path: Path, batch: int, size: int, *, dynamo: bool, dynamic_batch: bool = False,
           opset: int | None = None, optimize: bool = True) -> Path:
    """Export ``module`` with input ``input`` (batch, 3, size, size) and output ``output``; quiet."""
    x = torch.zeros(batch, 3, size, size)
    kwargs: dict = {"input_names": ["input"], "output_names": ["output"]}
    if opset is not None:
        kwargs["opset_version"] = opset
    if dynamo:
        kwargs["optimize"] = optimize
        kwargs["verbose"] = False
        if dynamic_batch:
            kwargs["dynamic_shapes"] = {"x": {0: torch.export.Dim("batch")}}
    elif dynamic_batch:
        kwargs["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=dynamo, **kwargs)
    return path
