"""GPEN models stored as ONNX graphs (the ``GPEN-BFR-*.onnx`` files of ReActor and FaceFusion).

Those files are exports of the official network: one input ``(B, 3, S, S)`` RGB in -1..1, the
restored face as first output, same shape and range. :func:`load_onnx_model` picks one of two ways
to run a file, once, at load time:

* **fast path**: the graph's weights are mapped back onto GPEN's state dict and loaded into the
  PyTorch network (so float16, batching and every speed-up of :mod:`gpen.network` apply). The
  mapping is only used after it reproduced the graph's own output, computed by onnxruntime on
  the CPU, on a probe input (:data:`PROBE_TOLERANCE`).
* **onnxruntime path** (:class:`OnnxGPEN`): the graph itself runs in onnxruntime (CUDA when
  onnxruntime-gpu is installed and the device is CUDA, else CPU), looping over the batch when
  the graph's batch is fixed.

How weights are mapped (:func:`map_onnx_weights`). Exporters rename and fold weights: the legacy
TorchScript exporter folds every product of a parameter with a constant (``weight * scale``)
into a new initializer named like ``onnx::Conv_1580``, stores linear weights transposed for
``MatMul`` and biases reshaped; the dynamo exporter keeps large parameters under their own
names but folds small ones (``mul_14``, ``view_3``). So the mapping works on *effective
constants*: the values that meet the image data, i.e. every constant subexpression of the graph
evaluated (with ``onnx``'s reference evaluator) up to the first operator that also reads
non-constant data. Then

1. initializers named like checkpoint keys (with or without a common prefix such as ``net.``)
   are taken as they are: a name survives only on a parameter the exporter left untouched; the
   constants derived from them are set aside;
2. the remaining effective constants are put in the orientation of their consumer (``MatMul``
   and ``Gemm`` weights as (out, in), ``ConvTranspose`` weights as (out, in)), tensors tiled
   along their first axis are reduced to one copy, and the fixed blur kernels are recognised by
   value and left out (the standard ones are used);
3. they are grouped by shape (size-1 axes ignored) and matched, within each group, to the
   unassigned checkpoint keys of that shape in the order the network uses them;
4. position-matched values are divided by the factor the official formulation folds into them
   (the equalised-learning-rate scales of convolutions and linear layers and the mapping
   network's learning-rate multiplier on its biases).

The encoder's widths, the style size and the mapping-network depth are read from the graph
(first convolutions, first linear layer, the number of matching matrices), and the resulting
state dict is checked with :func:`gpen.loader.infer_config` like any checkpoint.

Dependencies: ``.onnx`` files always need ``onnxruntime`` (``pip install onnxruntime``, or
``onnxruntime-gpu`` for NVIDIA GPUs): without it nothing could check a mapping or run a graph.
``onnx`` (the protobuf package) is needed to read the weights; without it the fast path is off
and a graph runs in onnxruntime, and only a file whose name says GPEN is accepted, because its
weights cannot be inspected.

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
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from .errors import InvalidInputError, ModelLoadError
from .network import GPEN, EqualConv2d, EqualLinear, GPENConfig, ModulatedConv2d, blur_kernel

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Largest accepted deviation of the mapped network from onnxruntime on the probe, as a fraction of
#: the standard deviation of the graph's output (largest absolute difference). A wrong mapping is
#: off by the order of the output itself.
PROBE_TOLERANCE = 1e-3
PROBE_TOLERANCE_FP16_GRAPH = 3e-2
INSTALL_ORT = ("pip install onnxruntime (CPU) or pip install onnxruntime-gpu (NVIDIA GPUs, CUDA)")
_GPEN_KEY = re.compile(r"(^|\.)(ecd\d+\.0\.\d\.(weight|bias|kernel)|final_linear\.0\.(weight|bias)|"
                       r"generator\.(style\.\d+|input|conv1|to_rgb1|convs\.\d+|to_rgbs\.\d+)\.[\w.]+)$")
_NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                     "Bernoulli", "Dropout"}
_WRITTEN_INTO = {"ScatterND", "ScatterElements", "Scatter"}
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class _Refused(Exception):
    """The fast path cannot be used; the message says why (``progress``: how far a mapping got)."""

    def __init__(self, message: str, progress: int = 0) -> None:
        super().__init__(message)
        self.progress = progress


# ---- optional packages -------------------------------------------------------------------------

def _import_onnxruntime(name: str):
    try:
        import onnxruntime
    except ImportError:
        raise ModelLoadError(f"{name}: running `.onnx` models needs onnxruntime, which is not installed: "
                             f"{INSTALL_ORT}. Or use the `.pth` file of the same model.") from None
    return onnxruntime


def _import_onnx():
    try:
        import onnx
        import onnx.numpy_helper
        import onnx.reference
    except ImportError:
        return None
    return onnx


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
    if inp.type not in _FLOAT_TYPES:
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
    if out.type not in _FLOAT_TYPES:
        raise ModelLoadError(f"{name}: not a GPEN model: its first output {out.name!r} is {out.type}.")
    return GraphSignature(inp.name, out.name, s, dims[0], _FLOAT_TYPES[inp.type])


# ---- effective constants -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Use:
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
            known = node.domain in ("", "ai.onnx") and node.op_type not in _NONDETERMINISTIC
            subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
            inputs = [x for x in node.input if x]
            if known and not subgraph and (node.op_type == "Constant" or (inputs and all(x in const for x in inputs))):
                const_nodes.append(node)
                const_ids.add(i)
                anc = frozenset().union(*(self.ancestors.get(x, frozenset()) for x in inputs))
                for o in node.output:
                    const.add(o)
                    self.ancestors[o] = anc
        self.uses: list[_Use] = []
        for i, node in enumerate(graph.node):
            if i in const_ids:
                continue
            attrs = tuple((a.name, onnx.helper.get_attribute_value(a)) for a in node.attribute
                          if a.name in ("transA", "transB", "group"))
            for slot, x in enumerate(node.input):
                if x in const:
                    self.uses.append(_Use(x, i, node.op_type, slot, attrs))
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
            raise _Refused(f"its constant expressions could not be evaluated ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
        return {n: np.asarray(v) for n, v in zip(names, values)}

    def initializer_array(self, name: str, onnx) -> np.ndarray:
        return onnx.numpy_helper.to_array(self.initializers[name])


def _canonical(value: np.ndarray, use: _Use) -> np.ndarray:
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


_STANDARD_KERNEL = blur_kernel().numpy()


def _is_blur_kernel(a: np.ndarray) -> bool:
    """Every trailing 4x4 slice is the [1,3,3,1] FIR kernel at some positive gain."""
    if a.ndim < 2 or a.shape[-2:] != (4, 4):
        return False
    k = a.reshape(-1, 4, 4).astype(np.float64)
    sums = k.sum(axis=(1, 2))
    return bool((sums > 0).all() and np.allclose(k / sums[:, None, None], _STANDARD_KERNEL, rtol=1e-4, atol=1e-7))


def _squeezed(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape if d != 1)


# ---- the GPEN side -------------------------------------------------------------------------------

def execution_order(config: GPENConfig) -> list[str]:
    """Every checkpoint key of ``config`` in the order the network uses it (layer by layer)."""
    n = config.log_size - 1
    keys = ["ecd0.0.0.weight", "ecd0.0.1.bias"]
    for i in range(1, n):
        keys += [f"ecd{i}.0.0.kernel", f"ecd{i}.0.1.weight", f"ecd{i}.0.2.bias"]
    keys += ["final_linear.0.weight", "final_linear.0.bias"]
    keys += [f"generator.style.{j}.{p}" for j in range(1, config.n_mlp + 1) for p in ("weight", "bias")]
    keys.append("generator.input.input")

    def styled(p: str, up: bool) -> list[str]:
        return ([f"{p}.conv.modulation.weight", f"{p}.conv.modulation.bias", f"{p}.conv.weight"]
                + ([f"{p}.conv.blur.kernel"] if up else []) + [f"{p}.noise.weight", f"{p}.activate.bias"])

    def to_rgb(p: str, up: bool) -> list[str]:
        return ([f"{p}.conv.modulation.weight", f"{p}.conv.modulation.bias", f"{p}.conv.weight", f"{p}.bias"]
                + ([f"{p}.upsample.kernel"] if up else []))

    keys += styled("generator.conv1", False) + to_rgb("generator.to_rgb1", False)
    for j in range(config.log_size - 2):
        keys += styled(f"generator.convs.{2 * j}", True) + styled(f"generator.convs.{2 * j + 1}", False)
        keys += to_rgb(f"generator.to_rgbs.{j}", True)
    return keys


def official_factors(net: GPEN) -> dict[str, float]:
    """The constant the official formulation multiplies each parameter by before it meets data."""
    factors = {}
    for name, mod in net.named_modules():
        if isinstance(mod, (EqualConv2d, ModulatedConv2d)):
            factors[f"{name}.weight"] = mod.scale
        elif isinstance(mod, EqualLinear):
            factors[f"{name}.weight"] = mod.scale
            factors[f"{name}.bias"] = mod.lr_mul
    return factors


def _prefix(names, keys: set[str]) -> str:
    """The most common prefix under which initializer names spell checkpoint keys ('' if none)."""
    found: Counter[str] = Counter()
    for nm in names:
        if nm in keys:
            found[""] += 1
        for m in re.finditer(r"\.", nm):
            if nm[m.end():] in keys:
                found[nm[:m.end()]] += 1
    return max(found, key=lambda p: (found[p], p == "")) if found else ""


# ---- mapping ---------------------------------------------------------------------------------------

@dataclass
class WeightMapping:
    """A state dict recovered from a graph, with how each key was found."""

    state: dict[str, torch.Tensor]
    config: GPENConfig
    by_name: int
    by_position: int
    prefix: str


class _Candidates:
    """The effective constants that are not derived from name-matched initializers, by shape."""

    def __init__(self, consts: GraphConstants, exclude: set[str]) -> None:
        self.by_use: dict[tuple, list[tuple[_Use, np.ndarray]]] = defaultdict(list)
        self.by_tensor: dict[tuple, list[tuple[_Use, np.ndarray]]] = defaultdict(list)
        seen: set[str] = set()
        for use in consts.uses:
            value = consts.values.get(use.tensor)
            if value is None or value.dtype.kind != "f" or value.ndim == 0:
                continue
            if use.op in _WRITTEN_INTO and use.slot == 0:  # a buffer being filled (zero insertion), not a weight
                continue
            if consts.ancestors.get(use.tensor, frozenset()) & exclude:
                continue
            a = _canonical(value, use)
            if _is_blur_kernel(a):
                continue
            shape = _squeezed(a.shape)
            self.by_use[shape].append((use, a))
            if use.tensor not in seen:
                seen.add(use.tensor)
                self.by_tensor[shape].append((use, a))


def _encoder_widths(consts: GraphConstants, size: int) -> dict[int, int]:
    """Encoder widths from the graph's first convolutions: (C, 3, 1, 1), then (C', C, 3, 3), ..."""
    n = int(math.log2(size)) - 1
    weights = []
    for use in consts.uses:
        if use.op != "Conv" or use.slot != 1 or dict(use.attrs).get("group", 1) != 1:
            continue
        value = consts.values.get(use.tensor)
        if value is None or value.ndim != 4 or _is_blur_kernel(value):
            continue
        weights.append(tuple(value.shape))
        if len(weights) == n:
            break
    found = ", ".join(str(w) for w in weights[:3])
    if len(weights) < n or weights[0][1:] != (3, 1, 1):
        raise _Refused(f"its first convolutions ({found or 'none'}) are not GPEN's {size}px encoder")
    channels = {size: weights[0][0]}
    for i in range(1, n):
        if weights[i][1:] != (weights[i - 1][0], 3, 3):
            raise _Refused(f"its convolution {i + 1} has shape {weights[i]}, not that of GPEN's encoder")
        channels[size >> i] = weights[i][0]
    return channels


def _style_dim(consts: GraphConstants, c4: int) -> int:
    for use in consts.uses:
        value = consts.values.get(use.tensor)
        if value is not None and value.ndim == 2 and use.op in ("MatMul", "Gemm"):
            a = _canonical(value, use)
            if a.shape[1] == 16 * c4:
                return int(a.shape[0])
    raise _Refused(f"no linear layer reads the 4x4x{c4} encoder output (GPEN's final_linear)")


def _mapping_depth(consts: GraphConstants, style_dim: int, c4: int) -> int:
    """Mapping-network depth guessed from the run of (style_dim, style_dim) matrices after final_linear."""
    run, started = 0, False
    for use in consts.uses:
        value = consts.values.get(use.tensor)
        if value is None or value.ndim != 2 or use.op not in ("MatMul", "Gemm") or use.slot == 2:
            continue
        shape = _canonical(value, use).shape
        if not started:
            started = shape == (style_dim, 16 * c4)
        elif shape == (style_dim, style_dim):
            run += 1
        else:
            break
    return run - 1 if c4 == style_dim else run  # conv1's modulation is (c4, style_dim)


def map_onnx_weights(model, size: int, onnx) -> WeightMapping:
    """Recover a GPEN state dict from an ONNX model (see the module docstring); raise ``_Refused``."""
    consts = GraphConstants(model, onnx)
    channels = _encoder_widths(consts, size)
    style_dim = _style_dim(consts, channels[4])
    names = list(consts.initializers)
    by_name = {int(m.group(1)) for n in names if (m := re.search(r"generator\.style\.(\d+)\.weight$", n))}
    best = None
    guess = len(by_name) or _mapping_depth(consts, style_dim, channels[4])
    for n_mlp in dict.fromkeys([guess, 8, *range(1, 17)]):
        if n_mlp < 1:
            continue
        config = GPENConfig(size=size, style_dim=style_dim, n_mlp=n_mlp, narrow=channels[4] / 512,
                            channels=channels)
        try:
            return _assign(consts, config, names, onnx)
        except _Refused as e:
            best = e if best is None or e.progress > best.progress else best
    raise best


def _assign(consts: GraphConstants, config: GPENConfig, names: list[str], onnx) -> WeightMapping:
    with torch.device("meta"):
        net = GPEN(config)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    order = execution_order(config)
    if sorted(order) != sorted(shapes):
        raise RuntimeError("execution_order() is out of step with gpen.network.GPEN")
    factors = official_factors(net)
    prefix = _prefix(names, set(shapes))
    alien = [n for n in names if n.startswith(prefix) and _GPEN_KEY.search(n) and n[len(prefix):] not in shapes]
    if alien:
        raise _Refused(f"the graph holds {alien[0]!r}, which a GPEN with {config.n_mlp} mapping layers lacks")
    state: dict[str, np.ndarray] = {}
    named: set[str] = set()
    for key in order:
        nm = prefix + key
        if key.endswith("kernel") or nm not in consts.initializers:
            continue
        value = consts.initializer_array(nm, onnx)
        if value.size == math.prod(shapes[key]) and value.dtype.kind == "f":
            state[key] = value.reshape(shapes[key])
            named.add(nm)
    by_name = len(state)
    wanted: dict[tuple, list[str]] = defaultdict(list)
    for key in order:
        if key not in state and not key.endswith("kernel"):
            wanted[_squeezed(shapes[key])].append(key)
    cands = _Candidates(consts, named)
    for shape, keys in wanted.items():
        found = cands.by_use.get(shape, [])
        if len(found) != len(keys):
            found = cands.by_tensor.get(shape, [])
        if len(found) != len(keys):
            raise _Refused(f"{len(keys)} weights of shape {shape} are needed (e.g. {keys[0]!r}) but the graph "
                           f"holds {len(found)} unattributed constants of that shape", progress=len(state))
        for key, (_, value) in zip(keys, found):
            state[key] = value.reshape(shapes[key]).astype(np.float32) / np.float32(factors.get(key, 1.0))
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}
    return WeightMapping(tensors, config, by_name, len(tensors) - by_name, prefix)


# ---- loading -------------------------------------------------------------------------------------------

def _ort_error(path: Path, e: Exception) -> ModelLoadError:
    from .loader import _corrupt

    text = str(e).strip()
    detail = text.split(":", 3)[-1].strip() if text.startswith("[ONNXRuntimeError]") else text
    detail = detail.splitlines()[0][:160] if detail else type(e).__name__
    if "INVALID_PROTOBUF" in text or "No graph was found" in text or "Protobuf parsing failed" in text:
        return _corrupt(path, f"onnxruntime: {detail}")
    return ModelLoadError(f"{path.name}: onnxruntime cannot load this graph ({detail}). If it was downloaded, it "
                          f"may be incomplete: delete {path} and download it again; otherwise update onnxruntime.")


def _session(ort, path: Path, providers: list):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception classes
        raise _ort_error(path, e) from None


def _read_model(onnx, path: Path):
    from .loader import _corrupt

    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError, missing external data, ...
        raise _corrupt(path, f"onnx: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}") from None


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
        raise _Refused(f"the mapped network returns {tuple(got.shape)}, the graph {tuple(want.shape)}")
    if not torch.isfinite(want).all():
        raise _Refused("the graph's own output on the probe is not finite")
    spread = float(want.std())
    err = float((got - want).abs().max()) / max(spread, 1e-12)
    tol = PROBE_TOLERANCE_FP16_GRAPH if signature.input_dtype is np.float16 else PROBE_TOLERANCE
    if not err <= tol:
        raise _Refused(f"the mapped weights do not reproduce the graph (largest difference {err:.3g} of the "
                       f"output's spread on the probe, tolerance {tol:g})")
    return err


def _gpen_names(names) -> list[str]:
    return [n for n in names if _GPEN_KEY.search(n)]


def _evidence(consts_names: list[str] | None, mapped: bool) -> str | None:
    """Why a graph that the fast path refused is still taken for GPEN (None: no evidence)."""
    if mapped:
        return "its weights have GPEN's exact layout"
    gpen_names = _gpen_names(consts_names or [])
    if len(gpen_names) >= 2:
        return f"it holds GPEN weights by name (e.g. {gpen_names[0]!r})"
    return None


def _other_architecture(names: list[str]) -> str | None:
    from .loader import _identify_other

    return _identify_other(names) if names and not _gpen_names(names) else None


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
    from .loader import load_model

    ort = _import_onnxruntime(path.name)
    session = _session(ort, path, ["CPUExecutionProvider"])
    signature = read_signature(session, path.name)
    found = _Inspection(signature, session)
    onnx = _import_onnx()
    if onnx is None:
        found.reason = "the `onnx` package is not installed (pip install onnx), so the weights cannot be read"
        if "gpen" in path.name.lower():
            found.evidence = "its file name says GPEN and its signature is GPEN's (not checked further without `onnx`)"
        return found
    model = _read_model(onnx, path)
    names = [t.name for t in model.graph.initializer]
    mapped = False
    try:
        try:
            mapping = map_onnx_weights(model, signature.size, onnx)
        except _Refused:
            raise
        except Exception as e:  # an unforeseen graph must not stop the onnxruntime path
            log.debug("mapping %s failed", path.name, exc_info=True)
            raise _Refused(f"reading its weights failed ({type(e).__name__}: {e})") from None
        del model
        try:
            net = load_model(mapping.state, device=device if fast_path else "cpu", dtype=torch.float32)
        except ModelLoadError as e:
            raise _Refused(f"the mapped weights are not a consistent GPEN checkpoint ({e})") from None
        mapped = True
        if not fast_path:
            raise _Refused("the fast path was switched off (fast_path=False)")
        found.error = _verify(net, session, signature, path.name)
        found.net, found.mapping = net, mapping
        return found
    except _Refused as e:
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
    from .loader import check_file, resolve_dtype

    path = check_file(path)
    dtype = resolve_dtype(dtype)
    device = torch.device(device)
    found = _inspect(path, device, fast_path)
    sig = found.signature
    if found.net is not None:
        m = found.mapping
        log.info("%s: fast path: its weights map onto GPEN %dpx (%d found by name%s, %d by position) and reproduce "
                 "the graph to %.1e of the output's spread; running in PyTorch on %s as %s", path.name, sig.size,
                 m.by_name, f" under the prefix {m.prefix!r}" if m.prefix else "", m.by_position, found.error,
                 device, str(dtype).removeprefix("torch."))
        return found.net.to(dtype=dtype)
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
    from .loader import check_file

    path = check_file(path)
    found = _inspect(path, torch.device("cpu"), fast_path=True)
    if found.net is None:
        raise ModelLoadError(f"{path.name}: the weights of this ONNX graph could not be mapped onto GPEN's "
                             f"({found.reason}); gpen.load_model can still run it with onnxruntime.")
    return {k: v.clone() for k, v in found.net.state_dict().items()}


# ---- the onnxruntime path ---------------------------------------------------------------------------

class OnnxGPEN:
    """A GPEN graph run by onnxruntime, with the network's calling convention.

    ``net(x)``: ``x`` (B, 3, size, size) RGB in -1..1 on any device; returns the restored batch on
    ``device`` in ``dtype`` (float32, or float16 for a float16 graph). A graph with a fixed batch
    runs in chunks of that batch (the last one padded). The input is never modified.
    """

    config = None

    def __init__(self, path: Path, signature: GraphSignature, device: torch.device, requested: torch.dtype,
                 cpu_session=None) -> None:
        ort = _import_onnxruntime(path.name)
        self.path = path
        self.signature = signature
        self.size = signature.size
        self.batch = signature.batch
        self.device = device
        self.dtype = signature.torch_dtype
        if requested != self.dtype:
            log.info("%s: %s does not apply on the onnxruntime path: the graph computes in %s", path.name,
                     str(requested).removeprefix("torch."), str(self.dtype).removeprefix("torch."))
        session = None
        if device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                cuda = ("CUDAExecutionProvider", {"device_id": device.index or 0})
                try:
                    session = _session(ort, path, [cuda, "CPUExecutionProvider"])
                except ModelLoadError as e:
                    log.warning("%s: onnxruntime's CUDA provider failed (%s); running on the CPU", path.name, e)
            else:
                log.warning("%s: onnxruntime has no CUDA provider here (install onnxruntime-gpu): the graph runs "
                            "on the CPU and its outputs are copied to %s", path.name, device)
        self.session = session or cpu_session or _session(ort, path, ["CPUExecutionProvider"])
        self.providers = self.session.get_providers()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore a batch (B, 3, S, S) in -1..1."""
        s = self.size
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InvalidInputError(f"{self.path.name} takes (batch, 3, {s}, {s}) images, got {got}.")
        n = x.shape[0]
        if n == 0:
            return torch.empty((0, 3, s, s), dtype=self.dtype, device=self.device)
        arr = x.detach().to(device="cpu", dtype=self.dtype).contiguous().numpy()
        step = self.batch or n
        outs = []
        for i in range(0, n, step):
            part = arr[i:i + step]
            m = part.shape[0]
            if self.batch and m < step:
                part = np.concatenate([part, np.repeat(part[-1:], step - m, axis=0)])
            out = self.session.run([self.signature.output_name], {self.signature.input_name: part})[0]
            outs.append(np.asarray(out)[:m])
        return torch.from_numpy(np.concatenate(outs) if len(outs) > 1 else outs[0]).to(self.device)

    def eval(self) -> OnnxGPEN:
        return self

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> OnnxGPEN:
        """Outputs go to ``device`` from now on (the onnxruntime provider was chosen at load time);
        ``dtype`` does not apply to a graph, which computes in its own precision."""
        if device is not None:
            self.device = torch.device(device)
        return self

    def requires_grad_(self, requires_grad: bool = True) -> OnnxGPEN:
        return self

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return iter(())

    def __repr__(self) -> str:
        return (f"OnnxGPEN({self.path.name!r}, size={self.size}, batch={self.batch or 'dynamic'}, "
                f"providers={self.providers})")
