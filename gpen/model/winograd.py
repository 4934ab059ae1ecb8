"""Winograd F(4x4, 3x3) convolutions on the CPU: 4x fewer multiplications for 3x3 stride-1 layers.

A 3x3 convolution of a 6x6 input tile gives a 4x4 output tile. Winograd's minimal filtering
algorithm (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016) computes it as
``A^T [(G g G^T) * (B^T d B)] A``: the input tile and the kernel are transformed into 36 values
each, multiplied position by position and summed over the input channels -- 36 matrix products
(tiles x in) @ (in x out), one per position, instead of 144 multiply-adds per output pixel and
channel pair -- and transformed back. The transforms are small exact matrices (points 0, +-1, +-2);
the result equals the direct convolution up to float32 rounding (the network's outputs stay within
3e-5 of a float64 evaluation of the official formulation; the tests check 1e-4).

Everything here is float32 tensor algebra on the caller's buffers (:class:`Session` of
``gpen.model.workspace``); on x86 the transforms and products go through oneDNN
(``gpen.model.cpu_matmul``), whose results are new tensors of one band each. The network decides
where Winograd pays (:func:`pays`).
"""

from __future__ import annotations

import torch

from . import cpu_matmul
from .workspace import Session

# Transform matrices of F(4x4, 3x3) with the interpolation points 0, 1, -1, 2, -2 (and infinity).
_BT = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
       (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))
_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))
_AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))
_matrices: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _transforms(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(36x36 input transform kron(B^T, B^T), 16x36 output transform kron(A^T, A^T))."""
    key = (dtype, device)
    if key not in _matrices:
        bt = torch.tensor(_BT, dtype=torch.float64)
        at = torch.tensor(_AT, dtype=torch.float64)
        _matrices[key] = (torch.kron(bt, bt).to(dtype=dtype, device=device),
                          torch.kron(at, at).to(dtype=dtype, device=device))
    return _matrices[key]


def conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """(36, in, out) transformed kernels ``G g G^T`` of a (out, in, 3, 3) weight (computed in float64),
    stored (36, out, in): each position's (out, in) matrix contiguous, as oneDNN's product reads it."""
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    o, i = weight.shape[:2]
    u = torch.kron(g, g) @ weight.detach().double().reshape(o * i, 9).t()  # (36, out * in)
    return u.view(36, o, i).to(weight.dtype).transpose(1, 2)


# Where Winograd pays, measured per layer shape on 2-core CPUs (``python -m bench layers``).
MIN_CHANNELS = 128  # input and output channels at least this ...
MIN_SIDE = 16  # ... on images at least this wide (and sides that are multiples of 4)


def pays(in_ch: int, out_ch: int, x: torch.Tensor) -> bool:
    """Whether a 3x3 stride-1 convolution of ``x`` (CPU, float32) runs faster as Winograd products.

    With many channels (``MIN_CHANNELS``) on images of at least ``MIN_SIDE`` it runs 1.7x (256 px,
    128 channels) to 3.5x (32 px) faster. Below that width of channels the input and output
    transforms cost as much as the products (the 64-channel 512 px layers and the 16/32-channel
    layers of the 1024/2048 px levels are faster direct); on 4-8 px images the transformed kernels
    (4x the weight) take longer to read than the direct convolution takes.
    """
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    h, w = x.shape[2:]
    return h % 4 == 0 and w % 4 == 0 and min(h, w) >= MIN_SIDE and min(in_ch, out_ch) >= MIN_CHANNELS


def _padded(x: torch.Tensor, scale: torch.Tensor, ws: Session) -> torch.Tensor:
    """(x * scale) with a zero border of one pixel, (B, C, H + 2, W + 2) channels-last, in one pass."""
    b, c, h, w = x.shape
    xp = ws.take((b, c, h + 2, w + 2), x, tag="winograd-padded", zero_new=True)  # only the inside is written
    torch.mul(x, scale[:, :, None, None], out=xp[:, :, 1:h + 1, 1:w + 1])
    return xp


def bands(tiles_per_row: int, rows: int, channels: int, u: torch.Tensor, budget: int = 32 * 2 ** 20) -> int:
    """How many row bands to split the tiles into: transform buffers of about ``budget`` bytes each,
    at least 256 tiles per band, and no more bands than re-reading the kernels ``u`` is worth."""
    per_row = 36 * tiles_per_row * (channels + u.shape[2]) * u.element_size()
    n = 1
    while (rows % (2 * n) == 0 and per_row * rows // n > budget and tiles_per_row * rows // (2 * n) >= 256
           and 2 * n * u.numel() * u.element_size() <= per_row * rows):
        n *= 2
    return n


def conv3x3(x: torch.Tensor, scale: torch.Tensor, u: torch.Tensor, out: torch.Tensor, bias: torch.Tensor,
            gain: torch.Tensor, ws: Session) -> None:
    """``out = gain * conv3x3(x * scale, padding=1) + bias`` through the transformed kernels ``u``.

    ``x`` (B, C, H, W) channels-last, H and W multiples of 4; ``scale`` (B, C) multiplies the input
    channels and ``gain`` (B, O) the output channels, ``bias`` (O,); ``u`` from :func:`conv_weight`.
    ``out`` (B, O, H, W) may be any view with unit channel stride (e.g. half of a concatenation
    buffer). Large inputs go through in row bands (see :func:`bands`).
    """
    b, c, h, w = x.shape
    if h % 4 or w % 4:
        raise ValueError("Winograd tiles need sizes that are multiples of 4")
    th, tw = h // 4, w // 4
    o = u.shape[2]
    mi, mo = _transforms(x.dtype, x.device)
    nb = th // bands(b * tw, th, c, u)
    n = b * nb * tw
    onednn = cpu_matmul.uses_onednn(x.dtype)
    # d and y share memory, as do v and z: each is dead when its partner is written (oneDNN gives v and z).
    half = 36 * n * max(c, o)
    flat = ws.scratch(half if onednn else 2 * half, x)
    d = flat[:36 * n * c].view(6, 6, b, nb, tw, c)
    y = flat[:36 * n * o].view(36, n, o)
    if not onednn:
        v = flat[half:half + 36 * n * c].view(36, n, c)
        z = flat[half:half + 16 * n * o].view(16, n * o)
    sb, _, sr, sc = out.stride()
    # z[a, b', batch, t, tj, o] -> out[batch, o, 4 (t0 + t) + a, 4 tj + b']
    zshape = (4, 4, b, nb, tw, o)
    size, stride = zshape, (sr, sc, sb, 4 * sr, 4 * sc, 1)
    gain = gain[None, None, :, None, None, :]
    xp = _padded(x, scale, ws)
    sxb, _, sxr, sxc = xp.stride()
    for t0 in range(0, th, nb):
        # d[i, j, batch, t, tj, :] = xp[batch, :, 4 (t0 + t) + i, 4 tj + j]
        tiles = xp.as_strided((6, 6, b, nb, tw, c), (sxr, sxc, sxb, 4 * sxr, 4 * sxc, 1),
                               xp.storage_offset() + 4 * t0 * sxr)
        d.copy_(tiles)
        if onednn:  # new tensors of a band each (the allocator re-uses them)
            v = cpu_matmul.linear(mi, d.view(36, -1).t()).view(36, n, c)
            torch.stack([cpu_matmul.linear(v[p], u[p].t()) for p in range(36)], out=y)
            z = cpu_matmul.linear(mo, y.view(36, -1).t())
        else:
            torch.mm(mi, d.view(36, -1), out=v.view(36, -1))
            torch.bmm(v, u, out=y)
            torch.mm(mo, y.view(36, -1), out=z)
        dst = out.as_strided(size, stride, out.storage_offset() + 4 * t0 * sr)
        torch.addcmul(bias, z.view(zshape), gain, out=dst)
    ws.give(flat)
    ws.give(xp)
