"""StyleGAN2's FIR filters: the blur before downsampling / after upsampling and the 2x RGB upsampler."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_conv import conv2d_into
from .workspace import Session


def blur_kernel(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0), gain: float = 1.0) -> torch.Tensor:
    """The separable FIR kernel outer(taps, taps) normalised to sum ``gain``."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = torch.outer(k, k)
    return k * (gain / k.sum())


def depthwise_weight(kernel: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """The (channels, 1, kh, kw) weight with which ``F.conv2d(..., groups=channels)`` convolves every
    channel with ``kernel`` (flipped: the filter is a true convolution, not a correlation)."""
    kh, kw = kernel.shape
    return torch.flip(kernel, (0, 1)).to(dtype).view(1, 1, kh, kw).expand(channels, 1, kh, kw)


def fir(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int], up: int = 1,
        ws: Session | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Upsample by zero insertion (``up``), pad, and convolve each channel with ``kernel``.

    Implemented as a depthwise (transposed) convolution; ``kernel`` is flipped because the
    filter is a true convolution, not a correlation. With ``ws`` (CPU) a symmetric, non-upsampling
    filter writes into ``out`` or else a buffer of the workspace.
    """
    c = x.shape[1]
    weight = depthwise_weight(kernel, c, x.dtype)
    kh, kw = kernel.shape
    if up == 1:
        if pad[0] == pad[1]:
            if ws is None:
                return F.conv2d(x, weight, padding=pad[0], groups=c)
            b, _, h, w = x.shape
            if out is None:
                out = ws.take((b, c, h + 2 * pad[0] - kh + 1, w + 2 * pad[0] - kw + 1), x)
            return conv2d_into(out, x, weight.contiguous(), None, 1, pad[0], groups=c)
        x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
        y = F.conv2d(x, weight, groups=c)
        return y if out is None else out.copy_(y)
    # Zero insertion + padding + correlation == transposed convolution with the flipped kernel.
    # Output size: in*up + pad0 + pad1 - kh + 1 (for up=2, pad=(2,1), k=4: 2*in).
    # conv_transpose2d(stride=up, padding=p) crops p from the full output; the full transposed output
    # corresponds to padding the zero-inserted signal by (kh-1) on the left.
    lead = kh - 1 - pad[0]
    out = F.conv_transpose2d(x, torch.flip(weight, (2, 3)), stride=up, groups=c)
    h_full = out.shape[2]
    h_out = x.shape[2] * up + pad[0] + pad[1] - kh + 1
    w_out = x.shape[3] * up + pad[0] + pad[1] - kw + 1
    if lead < 0 or lead + h_out > h_full:
        raise ValueError("unsupported FIR padding")
    return out[:, :, lead:lead + h_out, lead:lead + w_out]


class Blur(nn.Module):
    """Depthwise FIR filter with the checkpoint's ``kernel`` buffer."""

    def __init__(self, pad: tuple[int, int], gain: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel(gain=gain))
        self.pad = pad

    def forward(self, x: torch.Tensor, ws: Session | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        return fir(x, self.kernel, self.pad, ws=ws, out=out)


SEPARABLE_UPSAMPLE = True  # the CPU path's separable 2x upsampling (tests switch it off)


def separable_taps(kernel: torch.Tensor) -> tuple[float, ...] | None:
    """The 1-D taps ``t`` of a kernel equal to ``outer(t, t)`` with ``t`` symmetric (the released
    models' [1, 3, 3, 1] kernels), None for any other kernel."""
    k = kernel.detach().double().cpu()
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.sum() <= 0:
        return None
    t = k.sum(dim=1) / k.sum().sqrt()
    if not torch.allclose(torch.outer(t, t), k, rtol=1e-6, atol=1e-9) or not torch.allclose(t, t.flip(0)):
        return None
    return tuple(float(v) for v in t)


def upsample2x_add_(out: torch.Tensor, x: torch.Tensor, taps: tuple[float, ...], ws: Session) -> torch.Tensor:
    """``out += fir(x, outer(taps, taps), (2, 1), up=2)`` for 4 symmetric ``taps``, as two separable
    passes: each output sample of a 2x zero-inserted signal filtered with 4 taps is the sum of two
    input samples (even outputs ``t0 x[i-1] + t2 x[i]``, odd ``t1 x[i] + t3 x[i+1]``, zero beyond
    the border). Four element-wise passes per axis over planar memory, instead of oneDNN's slow
    depthwise transposed convolution (about 10x faster for the 3-channel RGB skip on the CPU).
    ``out`` (B, C, 2H, 2W) may be any layout; returns it."""
    t0, t1, t2, t3 = taps
    b, c, h, w = x.shape
    rows = ws.take((b, c, h, 2 * w), x, channels_last=False)  # x upsampled along W only
    even, odd = rows[..., 0::2], rows[..., 1::2]
    torch.mul(x, t2, out=even)
    even[..., 1:].add_(x[..., :-1], alpha=t0)
    torch.mul(x, t1, out=odd)
    odd[..., :-1].add_(x[..., 1:], alpha=t3)
    even, odd = out[:, :, 0::2], out[:, :, 1::2]
    even.add_(rows, alpha=t2)
    even[:, :, 1:].add_(rows[:, :, :-1], alpha=t0)
    odd.add_(rows, alpha=t1)
    odd[:, :, :-1].add_(rows[:, :, 1:], alpha=t3)
    ws.give(rows)
    return out


class Upsample(nn.Module):
    """2x upsampling by zero insertion and FIR filtering (the RGB skip path)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel(gain=4.0))
        k = self.kernel.shape[0]
        p = k - 2
        self.pad = ((p + 1) // 2 + 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fir(x, self.kernel, self.pad, up=2)

    def add_to(self, out: torch.Tensor, x: torch.Tensor, ws: Session) -> torch.Tensor:
        """``out += self(x)``, through the separable passes where the kernel allows
        (:func:`upsample2x_add_`; the CPU path of the network)."""
        taps = ws.derived(self, "taps", self.kernel, lambda: separable_taps(self.kernel))
        if SEPARABLE_UPSAMPLE and taps is not None and len(taps) == 4 and self.pad == (2, 1):
            return upsample2x_add_(out, x, taps, ws)
        return out.add_(self(x))
