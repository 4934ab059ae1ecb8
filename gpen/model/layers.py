"""Small building blocks of the GPEN network: the style path's layers, parameter holders, and the
elementwise pass that finishes a styled convolution's concatenation on the CPU."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..compat import is_compiling

SQRT2 = math.sqrt(2.0)
LRELU_SLOPE = 0.2

SHORT_RUN_BYTES = 64
"""On the CPU, where a styled convolution's output channels take fewer bytes than this per pixel (one
AVX-512 register: 16 in bfloat16), its concatenation is finished in contiguous passes
(``python -m bench layers --size 2048 --dtype bf16``, against ``--finish halves``: the 2048 px model's
last two layers 580 and 597 ms -> 155 and 167 ms on the 2-core AMD EPYC (Zen 4),
``bench/results/cpu_layers_2048_bf16{,_halves}_epyc_zen4.json``)."""


def finish_in_contiguous_passes(out: torch.Tensor, y: torch.Tensor, feature: torch.Tensor, bias: torch.Tensor,
                                gain: torch.Tensor) -> torch.Tensor:
    """``out = lrelu(cat(y, gain * feature + bias))`` for contiguous channels-last ``out`` (B, 2C, H, W):
    a concatenation and two passes over the whole buffer, where writing each half (a run of C values
    per pixel) would fall to the elementwise kernels' scalar code (:data:`SHORT_RUN_BYTES`)."""
    c = y.shape[1]
    torch.cat((y, feature), 1, out=out)
    pixels = out.permute(0, 2, 3, 1).view(-1, 2 * c)
    scale = torch.cat((torch.ones(c, dtype=out.dtype), gain.to(out.dtype).view(1).expand(c)))
    torch.addcmul(torch.cat((torch.zeros(c, dtype=out.dtype), bias.to(out.dtype))), pixels, scale, out=pixels)
    return F.leaky_relu_(out, LRELU_SLOPE)


def rowwise(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` for a batch of rows, computed one row at a time on the CPU.

    A CPU matrix product picks its kernel by the number of rows (one row: a matrix-vector
    product), so a row's result would depend on which rows share the call; row by row it is the
    same in every batch. The style path is a few matrix-vector products per layer, next to
    convolutions of whole images.
    """
    if x.shape[0] == 1 or x.device.type != "cpu" or torch.jit.is_tracing() or is_compiling():
        return fn(x)
    return torch.cat([fn(x[i:i + 1]) for i in range(x.shape[0])])


def _bias_lrelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's fused bias + leaky ReLU(0.2), scaled by sqrt(2) to keep unit variance."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.to(x.dtype).view(shape), LRELU_SLOPE) * SQRT2


class PixelNorm(nn.Module):
    """Normalise each latent vector to unit root-mean-square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (weights scaled at run time), optional fused lrelu."""

    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = 1.0, activation: bool = False,
                 bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The style path is computed in float32 whatever the model's dtype.
        x = x.float()
        w = self.weight.float() * self.scale
        b = self.bias.float() * self.lr_mul
        if self.activation:
            return _bias_lrelu(rowwise(lambda r: F.linear(r, w), x), b)
        return rowwise(lambda r: F.linear(r, w, b), x)


class NoiseInjection(nn.Module):
    """Strength of GPEN's "noise": the encoder feature, scaled by this learnt scalar, is concatenated
    to the styled convolution's output (computed inside ``StyledConv``)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


class ConstantInput(nn.Module):
    """The learnt 4x4 starting tensor of the generator."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)
