"""ONNX exports that look like the ones users have: the official formulation, weights under checkpoint names.

The ``GPEN-BFR-*.onnx`` files of ReActor and FaceFusion are exports of the official network. Its
code cannot be used here, so :class:`CheckpointModule` wraps the independent literal formulation of
``tests/reference_gpen.py`` (per-sample modulated weights, grouped convolutions) in a module whose
parameters and buffers carry the checkpoint's key names, which is what the official module has.

The legacy TorchScript exporter reads tensor sizes taken from ``x.shape`` as traced values; in the
literal formulation they size the per-sample weights of the grouped convolutions, whose shape then
becomes unknown and the export fails ("Unsupported: ONNX export of convolution for kernel of unknown
shape"). :func:`static_shapes` swaps in copies of the two helpers that read those sizes as Python
ints (what a fixed-shape export bakes in anyway); the arithmetic is unchanged. Dynamic-batch
exports of this formulation are impossible with any exporter: ONNX ``Conv`` needs ``group`` (the
batch size here) as a constant, which is why the files in circulation have a fixed batch of 1.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
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


def _upfirdn(x, k, up, down, pad):
    b, c, h, w = (int(v) for v in x.shape)
    if up > 1:
        z = x.new_zeros(b, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    kk = torch.flip(k, [0, 1])[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, kk, groups=c)
    return x[:, :, ::down, ::down]


def _modconv(sd, prefix, x, style, demod=True, up=False):
    w = sd[prefix + ".weight"]
    _, o, i, k, _ = (int(v) for v in w.shape)
    b = int(x.shape[0])
    s = reference_gpen.equal_linear(sd, prefix + ".modulation", style)
    weight = w / math.sqrt(i * k * k) * s.view(b, 1, i, 1, 1)
    if demod:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, o, 1, 1, 1)
    xs = x.reshape(1, b * i, *x.shape[2:])
    if up:
        wt = weight.transpose(1, 2).reshape(b * i, o, k, k)
        out = F.conv_transpose2d(xs, wt, stride=2, groups=b)
        out = out.view(b, o, *out.shape[2:])
        return _upfirdn(out, sd[prefix + ".blur.kernel"], 1, 1, (1, 1))
    out = F.conv2d(xs, weight.reshape(b * o, i, k, k), padding=k // 2, groups=b)
    return out.view(b, o, *out.shape[2:])


@contextlib.contextmanager
def static_shapes() -> Iterator[None]:
    """Within the block, the literal formulation reads tensor sizes as Python ints (see the module doc)."""
    saved = reference_gpen.upfirdn, reference_gpen.modconv
    reference_gpen.upfirdn, reference_gpen.modconv = _upfirdn, _modconv
    try:
        yield
    finally:
        reference_gpen.upfirdn, reference_gpen.modconv = saved


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
        literal = not dynamo and isinstance(_inner(module), CheckpointModule)
        with static_shapes() if literal else contextlib.nullcontext():
            torch.onnx.export(module, (x,), str(path), dynamo=dynamo, **kwargs)
    return path


def _inner(module: nn.Module) -> nn.Module:
    return module.net if isinstance(module, Prefixed) else module
