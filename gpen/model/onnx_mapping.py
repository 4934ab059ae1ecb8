"""Mapping the weights of a GPEN ONNX graph back onto the checkpoint keys of :mod:`gpen.model.network`.

:func:`map_onnx_weights` works on the graph's effective constants (:class:`gpen.model.onnx_graph.GraphConstants`):

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
(first convolutions, first linear layer, the number of matching matrices). A mapping is only a
candidate: :mod:`gpen.model.onnx_loading` uses it after it reproduced the graph's own output.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from .network import GPEN, EqualConv2d, EqualLinear, GPENConfig, ModulatedConv2d
from .onnx_graph import (GPEN_KEY, WRITTEN_INTO, ConstantUse, GraphConstants, MappingRefused, canonical, is_blur_kernel,
                         squeezed)


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
        self.by_use: dict[tuple, list[tuple[ConstantUse, np.ndarray]]] = defaultdict(list)
        self.by_tensor: dict[tuple, list[tuple[ConstantUse, np.ndarray]]] = defaultdict(list)
        seen: set[str] = set()
        for use in consts.uses:
            value = consts.values.get(use.tensor)
            if value is None or value.dtype.kind != "f" or value.ndim == 0:
                continue
            if use.op in WRITTEN_INTO and use.slot == 0:  # a buffer being filled (zero insertion), not a weight
                continue
            if consts.ancestors.get(use.tensor, frozenset()) & exclude:
                continue
            a = canonical(value, use)
            if is_blur_kernel(a):
                continue
            shape = squeezed(a.shape)
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
        if value is None or value.ndim != 4 or is_blur_kernel(value):
            continue
        weights.append(tuple(value.shape))
        if len(weights) == n:
            break
    found = ", ".join(str(w) for w in weights[:3])
    if len(weights) < n or weights[0][1:] != (3, 1, 1):
        raise MappingRefused(f"its first convolutions ({found or 'none'}) are not GPEN's {size}px encoder")
    channels = {size: weights[0][0]}
    for i in range(1, n):
        if weights[i][1:] != (weights[i - 1][0], 3, 3):
            raise MappingRefused(f"its convolution {i + 1} has shape {weights[i]}, not that of GPEN's encoder")
        channels[size >> i] = weights[i][0]
    return channels


def _style_dim(consts: GraphConstants, c4: int) -> int:
    for use in consts.uses:
        value = consts.values.get(use.tensor)
        if value is not None and value.ndim == 2 and use.op in ("MatMul", "Gemm"):
            a = canonical(value, use)
            if a.shape[1] == 16 * c4:
                return int(a.shape[0])
    raise MappingRefused(f"no linear layer reads the 4x4x{c4} encoder output (GPEN's final_linear)")


def _mapping_depth(consts: GraphConstants, style_dim: int, c4: int) -> int:
    """Mapping-network depth guessed from the run of (style_dim, style_dim) matrices after final_linear."""
    run, started = 0, False
    for use in consts.uses:
        value = consts.values.get(use.tensor)
        if value is None or value.ndim != 2 or use.op not in ("MatMul", "Gemm") or use.slot == 2:
            continue
        shape = canonical(value, use).shape
        if not started:
            started = shape == (style_dim, 16 * c4)
        elif shape == (style_dim, style_dim):
            run += 1
        else:
            break
    return run - 1 if c4 == style_dim else run  # conv1's modulation is (c4, style_dim)


def map_onnx_weights(model, size: int, onnx) -> WeightMapping:
    """Recover a GPEN state dict from an ONNX model (see the module docstring); raise ``MappingRefused``."""
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
        except MappingRefused as e:
            best = e if best is None or e.progress > best.progress else best
    raise best


def _assign(consts: GraphConstants, config: GPENConfig, names: list[str], onnx) -> WeightMapping:
    with torch.device("meta"):
        net = GPEN(config)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    order = execution_order(config)
    if sorted(order) != sorted(shapes):
        raise RuntimeError("execution_order() is out of step with gpen.model.network.GPEN")
    factors = official_factors(net)
    prefix = _prefix(names, set(shapes))
    alien = [n for n in names if n.startswith(prefix) and GPEN_KEY.search(n) and n[len(prefix):] not in shapes]
    if alien:
        raise MappingRefused(f"the graph holds {alien[0]!r}, which a GPEN with {config.n_mlp} mapping layers lacks")
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
            wanted[squeezed(shapes[key])].append(key)
    cands = _Candidates(consts, named)
    for shape, keys in wanted.items():
        found = cands.by_use.get(shape, [])
        if len(found) != len(keys):
            found = cands.by_tensor.get(shape, [])
        if len(found) != len(keys):
            raise MappingRefused(f"{len(keys)} weights of shape {shape} are needed (e.g. {keys[0]!r}) but the graph "
                           f"holds {len(found)} unattributed constants of that shape", progress=len(state))
        for key, (_, value) in zip(keys, found):
            state[key] = value.reshape(shapes[key]).astype(np.float32) / np.float32(factors.get(key, 1.0))
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}
    return WeightMapping(tensors, config, by_name, len(tensors) - by_name, prefix)
