"""float32 matrix products on x86 CPUs other than Intel's through oneDNN instead of MKL.

PyTorch's x86 builds do ``torch.mm`` / ``bmm`` / ``baddbmm`` in float32 with Intel MKL, which
takes its best code only on Intel processors and its AVX2 code on the others: on the 2-core AMD
EPYC (AVX-512) of ``bench/results/cpu_matmul_epyc.json`` a 2048^3 product runs at about 220
GFLOP/s in MKL and 490 in oneDNN (``python -m bench matmul``). oneDNN, which PyTorch also ships
(it runs the convolutions), generates its kernels for the processor it finds.

:func:`linear` is ``x @ w.T``, through oneDNN's matmul (``torch.ops.mkldnn._linear_pointwise``, a
private part of PyTorch's inductor back end, the op ``torch.compile`` uses for linear layers on the
CPU) where :func:`uses_onednn` says so: float32 on x86-64 processors other than Intel's (on Intel's
MKL is what the network was measured with), where the op exists and passes a check against
``torch.mm`` on a small case (tried once). Elsewhere it is ``torch.mm``. :data:`ENGINE` forces
either engine (tests run both on any machine; ``bench matmul`` compares them).
"""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Iterator

import torch

from ..cpuinfo import INTEL, cpu_vendor

log = logging.getLogger(__name__)

ENGINE = "auto"
"""``"auto"`` (oneDNN on x86 processors other than Intel's), ``"onednn"`` (wherever the op works) or
``"torch"`` (never oneDNN)."""

_X86 = platform.machine().lower() in ("x86_64", "amd64")
_works: bool | None = None


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


def onednn_works() -> bool:
    """Whether oneDNN's float32 product is available and right here (x86-64; probed once)."""
    global _works
    if _works is None:
        _works = _X86 and _probe()
    return _works


def uses_onednn(dtype: torch.dtype) -> bool:
    """Whether :func:`linear` goes through oneDNN for ``dtype`` (float32 only: half-precision products
    go to oneDNN in torch itself)."""
    if dtype != torch.float32 or ENGINE == "torch" or (ENGINE == "auto" and cpu_vendor() == INTEL):
        return False
    return onednn_works()


@contextlib.contextmanager
def engine(name: str) -> Iterator[None]:
    """Run the products with :data:`ENGINE` set to ``name`` inside the block."""
    global ENGINE
    saved, ENGINE = ENGINE, name
    try:
        yield
    finally:
        ENGINE = saved


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T (+ bias)`` for ``x`` (n, k), ``weight`` (o, k) (any strides, e.g. the transpose
    of a contiguous (k, o) matrix) and ``bias`` (o,): a new contiguous (n, o) tensor."""
    if x.device.type == "cpu" and x.dtype == weight.dtype and uses_onednn(x.dtype):
        return _onednn(x.contiguous(), weight, bias)
    return x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())
