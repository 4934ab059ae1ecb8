"""Convolutions written into a caller's buffer on the CPU (no fresh output pages per call).

:func:`conv2d_into`: ``torch.ops.mkldnn._convolution_pointwise_.binary(other, x, w, b, ..., "add", ...)`` computes
``conv(x, w) + b + other`` into ``other`` itself; with ``other`` zeroed first it is a plain
convolution into a buffer that the network keeps (``gpen.model.workspace``), so no fresh pages are
faulted in for the output. The op is a private part of PyTorch's inductor back end: it is tried
once per dtype on a small case, checked against ``F.conv2d`` (same values, written in place), and
:func:`conv2d_into` falls back to ``F.conv2d`` and a copy when it is missing or wrong.

:func:`conv_transpose3x3_s2_into`: a stride-2 transposed 3x3 convolution as one matrix product
(pixels x in) @ (in x 9 out) and nine strided additions of its taps into the output -- oneDNN's
transposed convolution is slow on small images (3x slower at 4-8 px, 1.7x at 16 px, 1.2x at 32 px
on the 2-core test CPUs).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

_supported: dict[torch.dtype, bool] = {}
enabled = True  # tests switch the oneDNN path off to check the fallback


def _binary_inplace(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    stride: int, padding: int, groups: int) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise_.binary(
        out, x, weight, bias, [padding, padding], [stride, stride], [1, 1], groups, "add", None, None, [], None)


def inplace_supported(dtype: torch.dtype) -> bool:
    """Whether oneDNN's in-place convolution works here for ``dtype`` (probed once)."""
    if not enabled:
        return False
    if dtype not in _supported:
        ok = False
        try:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(1, 8, 6, 6, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
            w = torch.randn(4, 8, 3, 3, generator=g).to(dtype)
            b = torch.randn(4, generator=g).to(dtype)
            out = torch.zeros(1, 4, 6, 6, dtype=dtype).contiguous(memory_format=torch.channels_last)
            res = _binary_inplace(out, x, w, b, 1, 1, 1)
            ref = F.conv2d(x, w, b, padding=1)
            tol = 1e-4 if dtype == torch.float32 else 5e-2
            ok = res.data_ptr() == out.data_ptr() and torch.allclose(out.float(), ref.float(), atol=tol, rtol=tol)
        except (AttributeError, RuntimeError, TypeError, NotImplementedError) as e:
            log.debug("oneDNN in-place convolution unavailable for %s: %s", dtype, e)
        _supported[dtype] = ok
    return _supported[dtype]


def conv2d_into(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                stride: int = 1, padding: int = 0, groups: int = 1) -> torch.Tensor:
    """``out[...] = F.conv2d(x, weight, bias, stride, padding, groups=groups)``; returns ``out``.

    ``out`` must be a contiguous channels-last CPU tensor of the convolution's output shape.
    """
    if x.device.type == "cpu" and out.is_contiguous(memory_format=torch.channels_last) \
            and inplace_supported(x.dtype):
        out.zero_()
        _binary_inplace(out, x, weight, bias, stride, padding, groups)
        return out
    out.copy_(F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=groups))
    return out


def transpose_weight_cols(weight: torch.Tensor) -> torch.Tensor:
    """(in, 9 * out) matrix of a (out, in, 3, 3) weight, columns ordered (row tap, column tap, out)."""
    return weight.permute(1, 2, 3, 0).reshape(weight.shape[1], -1).contiguous()


def conv_transpose3x3_s2_into(out: torch.Tensor, x: torch.Tensor, cols: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """``out[...] = conv_transpose2d(x, w.transpose(0, 1), stride=2)`` for ``cols = transpose_weight_cols(w)``.

    ``x`` (B, C, H, W) channels-last; ``out`` (B, O, 2H + 1, 2W + 1) any view with unit channel
    stride; ``taps`` a (B * H * W, 9 * O) scratch matrix. Returns ``out``.
    """
    b, c, h, w = x.shape
    o = out.shape[1]
    torch.mm(x.permute(0, 2, 3, 1).reshape(b * h * w, c), cols, out=taps)
    y = taps.view(b, h, w, 3, 3, o)
    dst = out.permute(0, 2, 3, 1)  # (B, 2H + 1, 2W + 1, O)
    # Each output phase (row parity, column parity) gets its first tap copied and the others added;
    # the last row/column of the even phases is reached only by taps 2, so it starts at zero.
    for pu, rows in ((0, (0, 2)), (1, (1,))):
        for pv, cols_ in ((0, (0, 2)), (1, (1,))):
            phase = dst[:, pu::2, pv::2]
            first = True
            for u in rows:
                for v in cols_:
                    region = phase[:, u // 2:u // 2 + h, v // 2:v // 2 + w]
                    if first:
                        if pu == 0:
                            phase[:, h].zero_()
                        if pv == 0:
                            phase[:, :, w].zero_()
                        region.copy_(y[:, :, :, u, v])
                        first = False
                    else:
                        region.add_(y[:, :, :, u, v])
    return out

