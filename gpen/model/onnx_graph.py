"""Reading ONNX graphs of GPEN: optional packages, the graph's signature, its effective constants.

GPEN files in circulation (the ``GPEN-BFR-*.onnx`` of ReActor and FaceFusion) are exports of the
official network: one input ``(B, 3, S, S)`` RGB in -1..1, the restored face as first output, same
shape and range. :func:`read_signature` checks that form on an onnxruntime session.

Exporters rename and fold weights: the legacy TorchScript exporter folds every product of a
parameter with a constant (``weight * scale``) into a new initializer named like
``onnx::Conv_1580``, stores linear weights transposed for ``MatMul`` and biases reshaped; the
dynamo exporter keeps large parameters under their own names but folds small ones (``mul_14``,
``view_3``). :class:`GraphConstants` therefore works on *effective constants*: the values that meet
the image data, i.e. every constant subexpression of the graph evaluated (with ``onnx``'s reference
evaluator) up to the first operator that also reads non-constant data. :func:`canonical` puts
them in the orientation of their consumer; :mod:`gpen.model.onnx_mapping` matches them to
checkpoint keys.

Dependencies: ``.onnx`` files always need ``onnxruntime`` (``pip install onnxruntime``, or
``onnxruntime-gpu`` for NVIDIA GPUs); ``onnx`` (the protobuf package) is needed to read the weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelLoadError
from .files import corrupt_file_error
from .network import blur_kernel

INSTALL_ORT = ("pip install onnxruntime (CPU) or pip install onnxruntime-gpu (NVIDIA GPUs, CUDA)")
GPEN_KEY = re.compile(r"(^|\.)(ecd\d+\.0\.\d\.(weight|bias|kernel)|final_linear\.0\.(weight|bias)|"
                      r"generator\.(style\.\d+|input|conv1|to_rgb1|convs\.\d+|to_rgbs\.\d+)\.[\w.]+)$")
NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                    "Bernoulli", "Dropout"}
WRITTEN_INTO = {"ScatterND", "ScatterElements", "Scatter"}
FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class MappingRefused(Exception):
    """The fast path cannot be used; the message says why (``progress``: how far a mapping got)."""

    def __init__(self, message: str, progress: int = 0) -> None:
        super().__init__(message)
        self.progress = progress


# ---- optional packages -------------------------------------------------------------------------

def import_onnxruntime(name: str):
    """The onnxruntime module, or ``ModelLoadError`` saying how to install it (``name``: the file)."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelLoadError(f"{name}: running `.onnx` models needs onnxruntime, which is not installed: "
                             f"{INSTALL_ORT}. Or use the `.pth` file of the same model.") from None
    return onnxruntime


def import_onnx():
    """The ``onnx`` package with its numpy helper and reference evaluator, or None when absent."""
    try:
        import onnx
        import onnx.numpy_helper
        import onnx.reference
    except ImportError:
        return None
    return onnx


def read_onnx_graph(onnx, path: Path):
    """The ``onnx`` model proto of ``path``; ``ModelLoadError`` when it cannot be parsed."""
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError, missing external data, ...
        raise corrupt_file_error(path, f"onnx: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}") from None


# ---- the graph's signature ---------------------------------------------------------------------

@dataclass(frozen=True)
class GraphSignature:
    """Name, face size, batch (None when dynamic) and element type of a GPEN-like graph."""

    input_name: str
    output_name: str
    size: int
    batch: int | None
    input_dtype: type

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float16 if self.input_dtype is np.float16 else torch.float32


def _dims(shape) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in (shape or [])]


def read_signature(session, name: str) -> GraphSignature:
    """Check that an onnxruntime session has GPEN's signature; raise ``ModelLoadError`` if not."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        listed = ", ".join(f"{i.name!r} {_dims(i.shape)}" for i in inputs)
        hint = " (CodeFormer, for example, takes an image and a fidelity weight)" if len(inputs) == 2 else ""
        raise ModelLoadError(f"{name}: not a GPEN model: it has {len(inputs)} inputs ({listed}){hint}; a GPEN "
                             f"graph has one input, the face image (1, 3, S, S).")
    inp = inputs[0]
    dims = _dims(inp.shape)
    if len(dims) != 4 or dims[1] != 3:
        raise ModelLoadError(f"{name}: not a GPEN model: its input {inp.name!r} has shape {dims}; a GPEN graph "
                             f"takes (batch, 3, S, S) RGB images.")
    s = dims[2]
    if s is None or dims[3] is None:
        raise ModelLoadError(f"{name}: its input {inp.name!r} has shape {dims}, without a fixed image size; GPEN "
                             f"graphs are exported for one square size (256, 512, 1024 or 2048).")
    if dims[3] != s or s < 8 or s & (s - 1):
        raise ModelLoadError(f"{name}: not a GPEN model: its input {inp.name!r} has shape {dims}; a GPEN graph "
                             f"takes square images of a fixed power-of-two size (256, 512, 1024, 2048).")
    if inp.type not in FLOAT_TYPES:
        raise ModelLoadError(f"{name}: not a GPEN model: its input {inp.name!r} is {inp.type}, expected float "
                             f"images.")
    if not outputs:
        raise ModelLoadError(f"{name}: not a usable model: the graph has no outputs.")
    out = outputs[0]
    odims = _dims(out.shape)
    want = [dims[0], 3, s, s]
    if len(odims) != 4 or any(o is not None and w is not None and o != w for o, w in zip(odims, want)):
        raise ModelLoadError(f"{name}: not a GPEN model: its first output {out.name!r} has shape {odims}, but a "
                             f"GPEN graph returns the restored face in the input's shape {want}.")
    if out.type not in FLOAT_TYPES:
        raise ModelLoadError(f"{name}: not a GPEN model: its first output {out.name!r} is {out.type}.")
    return GraphSignature(inp.name, out.name, s, dims[0], FLOAT_TYPES[inp.type])

# ---- effective constants -------------------------------------------------------------------------

@dataclass(frozen=True)
class ConstantUse:
    """One read of a constant by an operator that also reads non-constant data."""

    tensor: str
    node: int
    op: str
    slot: int
    attrs: tuple


class GraphConstants:
    """The initializers of a graph and its effective constants (see the module docstring)."""

    def __init__(self, model, onnx) -> None:
        graph = model.graph
        self.initializers = {t.name: t for t in graph.initializer}
        const: set[str] = set(self.initializers)
        self.ancestors: dict[str, frozenset[str]] = {n: frozenset([n]) for n in self.initializers}
        const_nodes, const_ids = [], set()
        for i, node in enumerate(graph.node):
            known = node.domain in ("", "ai.onnx") and node.op_type not in NONDETERMINISTIC
            subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
            inputs = [x for x in node.input if x]
            if known and not subgraph and (node.op_type == "Constant" or (inputs and all(x in const for x in inputs))):
                const_nodes.append(node)
                const_ids.add(i)
                anc = frozenset().union(*(self.ancestors.get(x, frozenset()) for x in inputs))
                for o in node.output:
                    const.add(o)
                    self.ancestors[o] = anc
        self.uses: list[ConstantUse] = []
        for i, node in enumerate(graph.node):
            if i in const_ids:
                continue
            attrs = tuple((a.name, onnx.helper.get_attribute_value(a)) for a in node.attribute
                          if a.name in ("transA", "transB", "group"))
            for slot, x in enumerate(node.input):
                if x in const:
                    self.uses.append(ConstantUse(x, i, node.op_type, slot, attrs))
        self.values: dict[str, np.ndarray] = {}
        needed = sorted({u.tensor for u in self.uses} - set(self.initializers))
        for n in {u.tensor for u in self.uses} & set(self.initializers):
            self.values[n] = onnx.numpy_helper.to_array(self.initializers[n])
        if needed:
            self.values.update(self._evaluate(model, onnx, const_nodes, needed))

    @staticmethod
    def _evaluate(model, onnx, nodes, names: list[str]) -> dict[str, np.ndarray]:
        helper = onnx.helper
        read = {x for node in nodes for x in node.input}
        sub = helper.make_graph(nodes, "constants", [], [helper.make_empty_tensor_value_info(n) for n in names],
                                initializer=[t for t in model.graph.initializer if t.name in read])
        sub_model = helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version)
        try:
            values = onnx.reference.ReferenceEvaluator(sub_model).run(None, {})
        except Exception as e:  # the reference evaluator raises many types
            raise MappingRefused(f"its constant expressions could not be evaluated ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
        return {n: np.asarray(v) for n, v in zip(names, values)}

    def initializer_array(self, name: str, onnx) -> np.ndarray:
        return onnx.numpy_helper.to_array(self.initializers[name])


def canonical(value: np.ndarray, use: ConstantUse) -> np.ndarray:
    """The constant oriented like a checkpoint tensor: linear weights (out, in), conv weights (out, in, k, k)."""
    attrs = dict(use.attrs)
    a = value
    if use.op == "MatMul" and use.slot == 1 and a.ndim == 2:
        a = a.T
    elif use.op == "Gemm" and a.ndim == 2:
        if (use.slot == 1 and not attrs.get("transB", 0)) or (use.slot == 0 and attrs.get("transA", 0)):
            a = a.T
    elif use.op == "ConvTranspose" and use.slot == 1 and a.ndim >= 3 and attrs.get("group", 1) == 1:
        a = a.swapaxes(0, 1)
    while a.ndim >= 3 and a.shape[0] > 1 and (a == a[:1]).all():  # tiled copies (constant input, kernels)
        a = a[:1]
    return a


STANDARD_KERNEL = blur_kernel().numpy()


def is_blur_kernel(a: np.ndarray) -> bool:
    """Every trailing 4x4 slice is the [1,3,3,1] FIR kernel at some positive gain."""
    if a.ndim < 2 or a.shape[-2:] != (4, 4):
        return False
    k = a.reshape(-1, 4, 4).astype(np.float64)
    sums = k.sum(axis=(1, 2))
    return bool((sums > 0).all() and np.allclose(k / sums[:, None, None], STANDARD_KERNEL, rtol=1e-4, atol=1e-7))


def squeezed(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape if d != 1)
