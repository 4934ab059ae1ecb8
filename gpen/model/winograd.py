"""Winograd convolutions on the CPU: 4x (float32) or 2.25x (bfloat16) fewer multiplications for 3x3 layers.

A 3x3 convolution of an (m + 2) x (m + 2) input tile gives an m x m output tile. Winograd's minimal
filtering algorithm (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016)
computes it as ``A^T [(G g G^T) * (B^T d B)] A``: the input tile and the kernel are transformed into
(m + 2)^2 values each, multiplied position by position and summed over the input channels -- one
matrix product (tiles x in) @ (in x out) per position, instead of 9 m^2 multiply-adds per tile and
channel pair -- and transformed back. The transforms are small exact matrices.

float32 uses F(4x4, 3x3) (36 products per 16 outputs; points 0, +-1, +-2): the result equals the
direct convolution up to float32 rounding (the network's outputs stay within 3e-5 of a float64
evaluation of the official formulation; the tests check 1e-4). bfloat16 uses F(2x2, 3x3) (16 products
per 4 outputs; points 0, +-1): F(4x4)'s transforms multiply the rounding of bfloat16's transformed
values, products and sums by up to 8 per direction: 9x the error of a direct bfloat16 convolution per
layer (3% of the output's spread in RMS, single values off by up to 0.66 of it), against 1.7x for
F(2x2) (``python -m bench winograd-error``, ``bench/results/cpu_winograd_bf16_error_epyc_zen4.json``).

Everything here is tensor algebra in the activations' dtype on the caller's buffers (:class:`Session`
of ``gpen.model.workspace``); in float32 on x86 the transforms and products go through oneDNN
(``gpen.model.cpu_matmul``), whose results are new tensors of one band each; in bfloat16 torch's own
products run in oneDNN (float32 sums). The network decides where Winograd pays (:func:`pays`).
"""

from __future__ import annotations

import torch

from ..cpuinfo import amx_bf16
from . import cpu_matmul
from .workspace import Session

# Transform matrices (B^T, G, A^T) per output tile side m: F(4x4, 3x3) with the interpolation
# points 0, 1, -1, 2, -2 (and infinity), F(2x2, 3x3) with 0, 1, -1 (and infinity).
_MATRICES = {
    4: (((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
         (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
        ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
         (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))),
    2: (((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1))),
}
_matrices: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def tile(dtype: torch.dtype) -> int:
    """Output tile side for activations of ``dtype``: 4 in float32, 2 in bfloat16 (see the module)."""
    return 2 if dtype == torch.bfloat16 else 4


def _transforms(m: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input transform kron(B^T, B^T), output transform kron(A^T, A^T)) of F(m x m, 3x3)."""
    key = (m, dtype, device)
    if key not in _matrices:
        bt, _, at = (torch.tensor(t, dtype=torch.float64) for t in _MATRICES[m])
        _matrices[key] = (torch.kron(bt, bt).to(dtype=dtype, device=device),
                          torch.kron(at, at).to(dtype=dtype, device=device))
    return _matrices[key]


def conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """((m + 2)^2, in, out) transformed kernels ``G g G^T`` of a (out, in, 3, 3) weight for the tile of its
    dtype (:func:`tile`; computed in float64, rounded once), stored ((m + 2)^2, out, in): each
    position's (out, in) matrix contiguous, as oneDNN's product reads it."""
    m = tile(weight.dtype)
    g = torch.tensor(_MATRICES[m][1], dtype=torch.float64, device=weight.device)
    o, i = weight.shape[:2]
    u = torch.kron(g, g) @ weight.detach().double().reshape(o * i, 9).t()  # ((m + 2)^2, out * in)
    return u.view(-1, o, i).to(weight.dtype).transpose(1, 2)


# Where Winograd pays, measured per layer shape on 2-core CPUs (``python -m bench layers``).
MIN_CHANNELS = 128  # input and output channels at least this ...
MIN_SIDE = 16  # ... on images at least this wide (and sides that are multiples of the tile)
BF16_MAX_SIDE = 128  # ... and in bfloat16 at most this wide (F(2x2)) ...
BF16_ON_AMX = False  # ... on processors without AMX (measured on AVX512_BF16 only; tests switch it on)


def pays(in_ch: int, out_ch: int, x: torch.Tensor) -> bool:
    """Whether a 3x3 stride-1 convolution of ``x`` (CPU, float32 or bfloat16) runs faster as Winograd
    products.

    With many channels (``MIN_CHANNELS``) on images of at least ``MIN_SIDE`` it runs 1.7x (256 px,
    128 channels) to 3.5x (32 px) faster. Below that width of channels the input and output
    transforms cost as much as the products (the 64-channel 512 px layers and the 16/32-channel
    layers of the 1024/2048 px levels are faster direct); on 4-8 px images the transformed kernels
    (4x the weight) take longer to read than the direct convolution takes. In bfloat16 (F(2x2), 2.25x
    fewer multiplications) it runs 1.65x (32 px) to 1.14x (128 px) faster than oneDNN's direct
    bfloat16 convolution on the 2-core AMD EPYC (Zen 4) and slower from 256 px on
    (``bench/results/cpu_layers_512_bf16_epyc_zen4.json``), hence ``BF16_MAX_SIDE``. Not measured
    against AMX's direct bfloat16 convolutions: there they stay direct.
    """
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16):
        return False
    h, w = x.shape[2:]
    if x.dtype == torch.bfloat16 and (max(h, w) > BF16_MAX_SIDE or (amx_bf16() and not BF16_ON_AMX)):
        return False
    m = tile(x.dtype)
    return h % m == 0 and w % m == 0 and min(h, w) >= MIN_SIDE and min(in_ch, out_ch) >= MIN_CHANNELS


def _padded(x: torch.Tensor, scale: torch.Tensor, ws: Session) -> torch.Tensor:
    """(x * scale) with a zero border of one pixel, (B, C, H + 2, W + 2) channels-last, in one pass."""
    b, c, h, w = x.shape
    xp = ws.take((b, c, h + 2, w + 2), x, tag="winograd-padded", zero_new=True)  # only the inside is written
    torch.mul(x, scale[:, :, None, None], out=xp[:, :, 1:h + 1, 1:w + 1])
    return xp


def bands(tiles_per_row: int, rows: int, channels: int, u: torch.Tensor, budget: int = 32 * 2 ** 20) -> int:
    """How many row bands to split the tiles into: transform buffers of about ``budget`` bytes each,
    at least 256 tiles per band, and no more bands than re-reading the kernels ``u`` is worth."""
    per_row = u.shape[0] * tiles_per_row * (channels + u.shape[2]) * u.element_size()
    n = 1
    while (rows % (2 * n) == 0 and per_row * rows // n > budget and tiles_per_row * rows // (2 * n) >= 256
           and 2 * n * u.numel() * u.element_size() <= per_row * rows):
        n *= 2
    return n


def conv3x3(x: torch.Tensor, scale: torch.Tensor, u: torch.Tensor, out: torch.Tensor, bias: torch.Tensor,
            gain: torch.Tensor, ws: Session) -> None:
    """``out = gain * conv3x3(x * scale, padding=1) + bias`` through the transformed kernels ``u``.

    ``x`` (B, C, H, W) channels-last, H and W multiples of the tile (:func:`tile`); ``scale`` (B, C)
    multiplies the input channels and ``gain`` (B, O) the output channels, ``bias`` (O,); ``u`` from
    :func:`conv_weight` in ``x``'s dtype. ``out`` (B, O, H, W) may be any view with unit channel
    stride (e.g. half of a concatenation buffer). Large inputs go through in row bands (see :func:`bands`).
    """
    b, c, h, w = x.shape
    m = tile(x.dtype)
    a, p = m + 2, (m + 2) ** 2  # input tile side, positions
    if h % m or w % m or u.shape[0] != p:
        raise ValueError(f"Winograd F({m}x{m}, 3x3) needs sizes that are multiples of {m} and its own kernels")
    th, tw = h // m, w // m
    o = u.shape[2]
    mi, mo = _transforms(m, x.dtype, x.device)
    nb = th // bands(b * tw, th, c, u)
    n = b * nb * tw
    onednn = cpu_matmul.uses_onednn(x.dtype)
    # d and y share memory, as do v and z: each is dead when its partner is written (oneDNN gives v and z).
    half = p * n * max(c, o)
    flat = ws.scratch(half if onednn else 2 * half, x)
    d = flat[:p * n * c].view(a, a, b, nb, tw, c)
    y = flat[:p * n * o].view(p, n, o)
    if not onednn:
        v = flat[half:half + p * n * c].view(p, n, c)
        z = flat[half:half + m * m * n * o].view(m * m, n * o)
    sb, _, sr, sc = out.stride()
    # z[i, j, batch, t, tj, o] -> out[batch, o, m (t0 + t) + i, m tj + j]
    zshape = (m, m, b, nb, tw, o)
    size, stride = zshape, (sr, sc, sb, m * sr, m * sc, 1)
    gain = gain[None, None, :, None, None, :]
    xp = _padded(x, scale, ws)
    sxb, _, sxr, sxc = xp.stride()
    for t0 in range(0, th, nb):
        # d[i, j, batch, t, tj, :] = xp[batch, :, m (t0 + t) + i, m tj + j]
        tiles = xp.as_strided((a, a, b, nb, tw, c), (sxr, sxc, sxb, m * sxr, m * sxc, 1),
                               xp.storage_offset() + m * t0 * sxr)
        d.copy_(tiles)
        if onednn:  # new tensors of a band each (the allocator re-uses them)
            v = cpu_matmul.linear(mi, d.view(p, -1).t()).view(p, n, c)
            torch.stack([cpu_matmul.linear(v[q], u[q].t()) for q in range(p)], out=y)
            z = cpu_matmul.linear(mo, y.view(p, -1).t())
        else:
            torch.mm(mi, d.view(p, -1), out=v.view(p, -1))
            torch.bmm(v, u, out=y)
            torch.mm(mo, y.view(p, -1), out=z)
        dst = out.as_strided(size, stride, out.storage_offset() + m * t0 * sr)
        torch.addcmul(bias, z.view(zshape), gain, out=dst)
    ws.give(flat)
    ws.give(xp)
