"""The precision a network runs in: the ``auto`` rule, and bfloat16 with float32 where it matters.

:func:`auto_dtype` is the one rule behind ``dtype="auto"`` of :func:`gpen.load_model`, the CLI's
``--dtype auto`` and the node's ``precision: auto``: float16 on CUDA and MPS (unless the host says
float16 is unsafe there), bfloat16 on processors with native bfloat16 matrix units
(:func:`gpen.cpuinfo.bf16_matrix_units`), float32 elsewhere.

bfloat16 keeps 8 bits of mantissa, and rounding every weight to it costs the output more than
rounding the activations (``bench/results/cpu_bf16_precision_epyc_zen4.json``): most of the loss
comes from the style path (mapping network, modulations, ``final_linear``), the biases and noise
strengths, and the encoder's 4 and 8 px stages, whose errors reach every layer through the latent.
Those hold a small share of the work, so a bfloat16 network (:func:`cast`) keeps them, and every
layer at sides up to :data:`FLOAT32_MAX_SIDE`, in float32; the network casts activations where
the precision changes (``gpen.model.network``).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..cpuinfo import bf16_matrix_units
from .derived import drop_derived

FLOAT32_MAX_SIDE = 16
"""In a bfloat16 network, layers whose output is at most this many pixels wide stay float32."""

MIXED_BFLOAT16 = True  # tests and bench switch it off to measure bfloat16 everywhere

_ALWAYS_FLOAT32 = re.compile(r"(^final_linear\.|^generator\.style\.|\.modulation\.|^generator\.input\.|"
                             r"noise\.weight$|bias$)")
_ENCODER = re.compile(r"^ecd(\d+)\.")
_GENERATOR = re.compile(r"^generator\.(conv1|to_rgb1|convs\.(\d+)|to_rgbs\.(\d+))\.")


def auto_dtype(device: torch.device | str, fp16_ok: bool | None = None) -> torch.dtype:
    """What ``auto`` means on ``device``: float16 on CUDA/MPS (float32 there when the host says
    ``fp16_ok=False``), bfloat16 on a CPU with native bfloat16 matrix units, float32 elsewhere."""
    kind = torch.device(device).type
    if kind in ("cuda", "mps"):
        return torch.float32 if fp16_ok is False else torch.float16
    if kind == "cpu" and bf16_matrix_units() and torch.backends.mkldnn.is_available():
        return torch.bfloat16
    return torch.float32


NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def auto_dtype_name(device: torch.device | str, fp16_ok: bool | None = None) -> str:
    """:func:`auto_dtype` as a short name (``"fp32"``, ``"fp16"``, ``"bf16"``)."""
    return NAMES[auto_dtype(device, fp16_ok)]


def layer_side(name: str, size: int) -> int | None:
    """Output side in pixels of the layer that owns parameter ``name`` of a ``size`` px GPEN (None
    for parameters outside the per-resolution layers)."""
    if m := _ENCODER.match(name):
        return size >> int(m.group(1))
    if m := _GENERATOR.match(name):
        if m.group(1) in ("conv1", "to_rgb1"):
            return 4
        index = int(m.group(2)) // 2 if m.group(2) is not None else int(m.group(3))
        return 8 << index
    return None


def keeps_float32(name: str, size: int) -> bool:
    """Whether parameter ``name`` of a ``size`` px GPEN stays float32 in a bfloat16 network."""
    if _ALWAYS_FLOAT32.search(name):
        return True
    side = layer_side(name, size)
    return side is None or side <= FLOAT32_MAX_SIDE


def cast(net: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``net`` (a GPEN) in ``dtype``, in place; for bfloat16 the parameters that :func:`keeps_float32`
    names are float32 (converted from what they hold now: cast a float32 network, not a bfloat16 one)."""
    if dtype != torch.bfloat16 or not MIXED_BFLOAT16:
        return net.to(dtype=dtype)
    net.to(dtype=torch.float32)
    with torch.no_grad():
        for name, p in list(net.named_parameters()):
            if not keeps_float32(name, net.size):
                owner, _, leaf = name.rpartition(".")
                module = net.get_submodule(owner)
                module._parameters[leaf] = nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=p.requires_grad)
    net.release_buffers()
    drop_derived(net)
    return net


def float32_share(net: nn.Module) -> float:
    """Fraction of the parameters of ``net`` held in float32."""
    total = sum(p.numel() for p in net.parameters())
    return sum(p.numel() for p in net.parameters() if p.dtype == torch.float32) / max(1, total)
