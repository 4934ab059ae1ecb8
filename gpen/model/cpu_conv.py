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

:func:`upsample_blur_into`: above that size, the transposed convolution and the blur after it in
row bands of a few MB, each blurred into the caller's buffer as soon as it is made: a single call
would fault in a fresh output of hundreds of MB at the 2048 px levels on every call
(``python -m bench layers --size 2048``: the five banded layers 983 against 1380 ms).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from . import cpu_matmul

log = logging.getLogger(__name__)

_supported: dict[torch.dtype, bool] = {}
enabled = True  # tests switch the oneDNN path off to check the fallback


def _binary_inplace(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    stride: int, padding: int | tuple[int, int], groups: int) -> torch.Tensor:
    pad = [padding, padding] if isinstance(padding, int) else list(padding)
    return torch.ops.mkldnn._convolution_pointwise_.binary(
        out, x, weight, bias, pad, [stride, stride], [1, 1], groups, "add", None, None, [], None)


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
                stride: int = 1, padding: int | tuple[int, int] = 0, groups: int = 1) -> torch.Tensor:
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
    """(in, 9 * out) matrix of a (out, in, 3, 3) weight, columns ordered (row tap, column tap, out);
    stored transposed (each column contiguous, as oneDNN's product reads it)."""
    return weight.permute(2, 3, 0, 1).reshape(-1, weight.shape[1]).contiguous().t()


def conv_transpose3x3_s2_into(out: torch.Tensor, x: torch.Tensor, cols: torch.Tensor,
                              taps: torch.Tensor | None = None) -> torch.Tensor:
    """``out[...] = conv_transpose2d(x, w.transpose(0, 1), stride=2)`` for ``cols = transpose_weight_cols(w)``.

    ``x`` (B, C, H, W) channels-last; ``out`` (B, O, 2H + 1, 2W + 1) any view with unit channel
    stride; ``taps`` a (B * H * W, 9 * O) scratch matrix for the product, or None for a new one
    (through oneDNN, ``gpen.model.cpu_matmul``). Returns ``out``.
    """
    b, c, h, w = x.shape
    o = out.shape[1]
    pixels = x.permute(0, 2, 3, 1).reshape(b * h * w, c)
    if taps is None:
        taps = cpu_matmul.linear(pixels, cols.t())
    else:
        torch.mm(pixels, cols, out=taps)
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


BAND_BYTES = 8 * 2 ** 20
"""Size of the transposed convolution's output per row band in :func:`upsample_blur_into`: small
enough to come from the allocator's heap (re-used, no fresh pages) and to be blurred from cache."""


def upsample_blur_into(out: torch.Tensor, x: torch.Tensor, weight_t: torch.Tensor, blur: torch.Tensor,
                       bias: torch.Tensor | None = None, band_bytes: int | None = None) -> torch.Tensor:
    """``out[...] = fir(conv_transpose2d(x, weight_t, stride=2), blur, pad=(1, 1)) + bias`` in row bands.

    ``x`` (1, C, H, W); ``weight_t`` (C, O, 3, 3); ``blur`` the (4, 4) depthwise kernel as
    ``F.conv2d`` takes it, (O, 1, 4, 4); ``bias`` (O,) or None; ``out`` (1, O, 2H, 2W) contiguous
    channels-last (a row band of it is contiguous too). Output rows [a, b) read rows [a - 1, b + 2)
    of the transposed convolution (2H + 1 rows), which the input rows [ceil((a - 3) / 2), (b + 1) // 2]
    make complete;
    each band computes just those (about one input row more per band than a single call) and is
    blurred at once, instead of one call's fresh output of the whole image (hundreds of MB at the
    2048 px levels, faulted in page by page on every call).
    """
    _, _, h, w = x.shape
    o = weight_t.shape[1]
    band_bytes = BAND_BYTES if band_bytes is None else band_bytes
    rows = max(2, int(band_bytes // max(1, (2 * w + 1) * o * out.element_size())) - 3) // 2 * 2
    for a in range(0, 2 * h, rows):
        b = min(2 * h, a + rows)
        ya, yb = max(0, a - 1), min(2 * h + 1, b + 2)  # transposed-conv rows the band reads
        i0, i1 = max(0, (ya - 1) // 2), min(h, (yb - 1) // 2 + 1)  # input rows that complete them
        y = F.conv_transpose2d(x[:, :, i0:i1], weight_t, stride=2)  # rows [2 i0, 2 i1 + 1)
        y = y[:, :, ya - 2 * i0:yb - 2 * i0]
        top, bottom = ya - (a - 1), (b + 2) - yb  # zero rows beyond the image's border
        if top or bottom:
            y = F.pad(y, (0, 0, top, bottom))
        conv2d_into(out[:, :, a:b], y, blur, bias, 1, (0, 1), groups=o)
    return out
