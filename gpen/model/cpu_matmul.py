"""Matrix products on x86 CPUs through oneDNN instead of the BLAS library torch was built with.

PyTorch's x86 builds do ``torch.mm`` / ``bmm`` / ``baddbmm`` in float32 with Intel MKL, which
takes its AVX2 code path on AMD processors: on the 2-core AMD EPYC (AVX-512) of
``bench/results/cpu_matmul_epyc.json`` a 2048^3 product runs at about 200 GFLOP/s in MKL and 470
in oneDNN (``python -m bench matmul``). oneDNN, which PyTorch also ships (it runs the
convolutions), generates its kernels for the processor it finds. :func:`linear` is ``x @ w.T``
through oneDNN's matmul (``torch.ops.mkldnn._linear_pointwise``, a private part of PyTorch's
inductor back end, the same op ``torch.compile`` uses for linear layers on the CPU); it is tried
once per dtype on a small case, checked against ``torch.mm`` and falls back to it when the op is
missing or wrong, and on processors other than x86-64 (where MKL is not what torch uses).
"""

from __future__ import annotations

import logging
import platform

import torch

log = logging.getLogger(__name__)

_probed: bool | None = None
enabled = True  # tests switch the oneDNN path off to check the fallback
_X86 = platform.machine().lower() in ("x86_64", "amd64")


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _probe() -> bool:
    try:
        g = torch.Generator().manual_seed(0)
        x, w, b = torch.randn(5, 7, generator=g), torch.randn(6, 7, generator=g), torch.randn(6, generator=g)
        ref = x @ w.t()
        close = [torch.allclose(got, want, atol=1e-4, rtol=1e-4) for got, want in (
            (_onednn(x, w), ref), (_onednn(x, w.t().contiguous().t()), ref), (_onednn(x, w, b), ref + b))]
        return all(close)  # plain and transposed weight layouts, with a bias
    except (AttributeError, RuntimeError, TypeError, NotImplementedError) as e:
        log.debug("oneDNN matrix product unavailable: %s", e)
        return False


def supported(dtype: torch.dtype) -> bool:
    """Whether :func:`linear` runs through oneDNN here for ``dtype``: float32 on x86-64, where the op
    works (probed once; half-precision products go to oneDNN in torch itself)."""
    global _probed
    if not (enabled and _X86 and dtype == torch.float32):
        return False
    if _probed is None:
        _probed = _probe()
    return _probed


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T (+ bias)`` for ``x`` (n, k), ``weight`` (o, k) (any strides, e.g. the transpose
    of a contiguous (k, o) matrix) and ``bias`` (o,): a new contiguous (n, o) tensor; through oneDNN
    on x86 CPUs."""
    if x.device.type == "cpu" and x.dtype == weight.dtype and supported(x.dtype):
        return _onednn(x.contiguous(), weight, bias)
    return x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())
