"""Loading a GPEN ``.onnx`` file: the fast path when its weights map onto the network, else onnxruntime.

:func:`load_onnx_model` picks one of two ways to run a file, once, at load time:

* **fast path**: the graph's weights are mapped back onto GPEN's state dict
  (:mod:`gpen.model.onnx_mapping`) and loaded into the PyTorch network (so float16, batching and
  every speed-up of :mod:`gpen.model.network` apply). The mapping is only used after it reproduced
  the graph's own output, computed by onnxruntime on the CPU, on a probe input
  (:data:`PROBE_TOLERANCE`).
* **onnxruntime path** (:class:`gpen.model.onnx_runtime.OnnxGPEN`): the graph itself runs in onnxruntime.

Without the ``onnx`` package the fast path is off and a graph runs in onnxruntime, and only a file
whose name says GPEN is accepted, because its weights cannot be inspected.

Recognising GPEN: a graph must have one image input (B, 3, S, S) with S a power of two and an
output of the same shape. A graph with that signature is accepted as GPEN only with evidence
from its weights: a verified mapping; a complete GPEN-shaped mapping that the probe rejected
(GPEN weights, unfamiliar formulation); or GPEN checkpoint names among its initializers.
Otherwise (for example GFPGAN, which has the same signature) it is refused as "not a GPEN
model", unless ``allow_unverified=True``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelLoadError
from .checkpoint import build_network, resolve_dtype
from .precision import cast
from .files import PathLike, check_file, identify_other_architecture
from .network import GPEN
from .onnx_graph import (GPEN_KEY, GraphSignature, MappingRefused, import_onnx, import_onnxruntime, read_onnx_graph,
                         read_signature)
from .onnx_mapping import WeightMapping, map_onnx_weights
from .onnx_runtime import OnnxGPEN, create_session

log = logging.getLogger(__name__)

#: Largest accepted deviation of the mapped network from onnxruntime on the probe, as a fraction of
#: the standard deviation of the graph's output (largest absolute difference). A wrong mapping is
#: off by the order of the output itself.
PROBE_TOLERANCE = 1e-3
PROBE_TOLERANCE_FP16_GRAPH = 3e-2


@contextlib.contextmanager
def _exact_float32() -> Iterator[None]:
    """Disable TF32 so that a CUDA probe is computed in true float32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def probe_input(signature: GraphSignature) -> torch.Tensor:
    """The fixed pseudo-random input (-1..1) on which a mapping must reproduce the graph."""
    gen = torch.Generator().manual_seed(20210621)
    return torch.rand(signature.batch or 1, 3, signature.size, signature.size, generator=gen) * 2 - 1


def _verify(net: GPEN, session, signature: GraphSignature, name: str) -> float:
    """Largest |ours - onnxruntime| on the probe, relative to the std of the graph's output."""
    x = probe_input(signature)
    try:
        want = session.run([signature.output_name], {signature.input_name: x.numpy().astype(signature.input_dtype)})[0]
    except Exception as e:  # onnxruntime's own exception classes
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{name}: onnxruntime fails to run this graph ({detail}).") from None
    want = torch.from_numpy(np.asarray(want, dtype=np.float32))
    with _exact_float32():
        got = net(x).float().cpu()
    if got.shape != want.shape:
        raise MappingRefused(f"the mapped network returns {tuple(got.shape)}, the graph {tuple(want.shape)}")
    if not torch.isfinite(want).all():
        raise MappingRefused("the graph's own output on the probe is not finite")
    spread = float(want.std())
    err = float((got - want).abs().max()) / max(spread, 1e-12)
    tol = PROBE_TOLERANCE_FP16_GRAPH if signature.input_dtype is np.float16 else PROBE_TOLERANCE
    if not err <= tol:
        raise MappingRefused(f"the mapped weights do not reproduce the graph (largest difference {err:.3g} of the "
                       f"output's spread on the probe, tolerance {tol:g})")
    return err


def _gpen_names(names) -> list[str]:
    return [n for n in names if GPEN_KEY.search(n)]


def _evidence(consts_names: list[str] | None, mapped: bool) -> str | None:
    """Why a graph that the fast path refused is still taken for GPEN (None: no evidence)."""
    if mapped:
        return "its weights have GPEN's exact layout"
    gpen_names = _gpen_names(consts_names or [])
    if len(gpen_names) >= 2:
        return f"it holds GPEN weights by name (e.g. {gpen_names[0]!r})"
    return None


def _other_architecture(names: list[str]) -> str | None:
    return identify_other_architecture(names) if names and not _gpen_names(names) else None


@dataclass
class _Inspection:
    """What load time learnt about a file."""

    signature: GraphSignature
    session: Any  # CPU onnxruntime session
    net: GPEN | None = None  # verified fast-path network (float32)
    mapping: WeightMapping | None = None
    error: float | None = None
    reason: str | None = None  # why the fast path was refused
    evidence: str | None = None


def _inspect(path: Path, device: torch.device, fast_path: bool) -> _Inspection:
    ort = import_onnxruntime(path.name)
    session = create_session(ort, path, ["CPUExecutionProvider"])
    signature = read_signature(session, path.name)
    found = _Inspection(signature, session)
    onnx = import_onnx()
    if onnx is None:
        found.reason = "the `onnx` package is not installed (pip install onnx), so the weights cannot be read"
        if "gpen" in path.name.lower():
            found.evidence = "its file name says GPEN and its signature is GPEN's (not checked further without `onnx`)"
        return found
    model = read_onnx_graph(onnx, path)
    names = [t.name for t in model.graph.initializer]
    mapped = False
    try:
        try:
            mapping = map_onnx_weights(model, signature.size, onnx)
        except MappingRefused:
            raise
        except Exception as e:  # an unforeseen graph must not stop the onnxruntime path
            log.debug("mapping %s failed", path.name, exc_info=True)
            raise MappingRefused(f"reading its weights failed ({type(e).__name__}: {e})") from None
        del model
        try:
            net = build_network(mapping.state, "state dict", device=device if fast_path else "cpu", dtype=torch.float32)
        except ModelLoadError as e:
            raise MappingRefused(f"the mapped weights are not a consistent GPEN checkpoint ({e})") from None
        mapped = True
        if not fast_path:
            raise MappingRefused("the fast path was switched off (fast_path=False)")
        found.error = _verify(net, session, signature, path.name)
        found.net, found.mapping = net, mapping
        return found
    except MappingRefused as e:
        found.reason = str(e)
    other = _other_architecture(names)
    if other:
        raise ModelLoadError(f"{path.name}: not a GPEN model (its weights look like {other}).")
    found.evidence = _evidence(names, mapped)
    return found


def load_onnx_model(path: PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | str = torch.float32,
                    *, fast_path: bool = True, allow_unverified: bool = False) -> GPEN | OnnxGPEN:
    """Load a GPEN ``.onnx`` file: the PyTorch network when its weights map (verified), else :class:`OnnxGPEN`.

    ``fast_path=False`` always runs the graph in onnxruntime. ``allow_unverified=True`` runs a graph
    with GPEN's signature even when nothing in it can be recognised as GPEN (a warning is logged).
    Raises ``ModelLoadError`` for missing dependencies, corrupt files and graphs that are not GPEN.
    """
    path = check_file(path)
    dtype = resolve_dtype(dtype, device)
    device = torch.device(device)
    found = _inspect(path, device, fast_path)
    sig = found.signature
    if found.net is not None:
        m = found.mapping
        log.info("%s: fast path: its weights map onto GPEN %dpx (%d found by name%s, %d by position) and reproduce "
                 "the graph to %.1e of the output's spread; running in PyTorch on %s as %s", path.name, sig.size,
                 m.by_name, f" under the prefix {m.prefix!r}" if m.prefix else "", m.by_position, found.error,
                 device, str(dtype).removeprefix("torch."))
        return cast(found.net, dtype)
    if found.evidence is None:
        if not allow_unverified:
            raise ModelLoadError(
                f"{path.name}: not a GPEN model: its input and output have the form of one ({sig.size}px images), "
                f"but nothing in it could be recognised as GPEN ({found.reason}). Other face restorers such as "
                f"GFPGAN have the same form; use a GPEN-BFR file.")
        log.warning("%s: could not verify that this graph is GPEN (%s); running it anyway as asked", path.name,
                    found.reason)
    else:
        log.info("%s: recognised as GPEN: %s", path.name, found.evidence)
    log.log(logging.WARNING if fast_path else logging.INFO, "%s: fast path refused: %s. Running the graph with "
            "onnxruntime instead (slower)", path.name, found.reason)
    return OnnxGPEN(path, sig, device, dtype, cpu_session=found.session)


def read_onnx_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """The verified GPEN state dict (float32, CPU) of a ``.onnx`` file; ``ModelLoadError`` if it does not map."""
    path = check_file(path)
    found = _inspect(path, torch.device("cpu"), fast_path=True)
    if found.net is None:
        raise ModelLoadError(f"{path.name}: the weights of this ONNX graph could not be mapped onto GPEN's "
                             f"({found.reason}); gpen.load_model can still run it with onnxruntime.")
    return {k: v.clone() for k, v in found.net.state_dict().items()}
