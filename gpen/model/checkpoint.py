"""From a state dict to a GPEN network: recognise it, infer the config, check every tensor, build.

The configuration (size, widths, style size, mapping depth) comes from tensor names and shapes
alone, never from a file name. Every failure raises ``ModelLoadError`` naming the source.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import InvalidInputError, ModelLoadError
from .files import identify_other_architecture, unwrap_state_dict
from .network import GPEN, GPENConfig, blur_kernel
from .precision import auto_dtype, cast

log = logging.getLogger(__name__)

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


def resolve_dtype(dtype: torch.dtype | str, device: torch.device | str = "cpu") -> torch.dtype:
    """Accept a torch dtype or a name such as ``"fp16"``, ``"bf16"``, ``"float32"``, or ``"auto"``:
    what :func:`gpen.model.precision.auto_dtype` picks for ``device``."""
    if isinstance(dtype, str) and dtype.lower() == "auto":
        return auto_dtype(device)
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise InvalidInputError(f"unsupported dtype {dtype}; use float32, float16 or bfloat16.")
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise InvalidInputError(f"unsupported dtype {dtype!r}; use one of auto, fp32, fp16, bf16.") from None


DEVICE_HINT = "use cpu, cuda, cuda:N or mps (auto on the command line)"


def resolve_device(device: torch.device | str) -> torch.device:
    """``device`` as a torch device that exists on this machine, else ``InvalidInputError`` saying which to use."""
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device))
    except (RuntimeError, ValueError, TypeError):
        raise InvalidInputError(f"unknown device {device!r}: {DEVICE_HINT}.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device {device!r}: torch sees no CUDA GPU here (no GPU, no driver, or a "
                                    f"CPU-only torch build); use cpu (or auto).")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidInputError(f"device {device!r}: there are {torch.cuda.device_count()} CUDA GPU(s), "
                                    f"numbered from 0.")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidInputError(f"device {device!r}: Apple's MPS is not available here; use cpu (or auto).")
    return dev  # other types torch knows (xpu, DirectML's privateuseone, ...) as they are


def infer_config(state: Mapping[str, torch.Tensor], name: str = "state dict") -> GPENConfig:
    """Infer size, style_dim, n_mlp and the width table from tensor names and shapes alone."""
    keys = list(state)
    if "ecd0.0.0.weight" not in state or "final_linear.0.weight" not in state:
        other = identify_other_architecture(keys)
        looks = f" (looks like {other})" if other else ""
        raise ModelLoadError(f"{name}: not a GPEN checkpoint{looks}. Expected GPEN-BFR weights with tensors "
                             f"such as 'ecd0.0.0.weight' and 'generator.style.1.weight'; found e.g. "
                             f"{', '.join(repr(k) for k in keys[:3])}.")
    stages = sorted(int(m.group(1)) for k in keys if (m := re.fullmatch(r"ecd(\d+)\.0\.\d\.weight", k)))
    n = stages[-1] + 1
    if stages != list(range(n)):
        raise ModelLoadError(f"{name}: incomplete GPEN checkpoint: encoder stages {sorted(set(range(n)) - set(stages))} "
                             f"are missing.")
    size = 2 ** (n + 1)
    channels = {size: int(state["ecd0.0.0.weight"].shape[0])}
    for i in range(1, n):
        w = state.get(f"ecd{i}.0.1.weight")
        if w is None or w.ndim != 4:
            raise ModelLoadError(f"{name}: incomplete GPEN checkpoint: 'ecd{i}.0.1.weight' is missing or malformed.")
        channels[size >> i] = int(w.shape[0])
    fl = state["final_linear.0.weight"]
    if fl.ndim != 2 or fl.shape[1] != channels[4] * 16:
        raise ModelLoadError(f"{name}: 'final_linear.0.weight' has shape {tuple(fl.shape)}, expected "
                             f"(style_dim, {channels[4] * 16}) for a {size}px GPEN encoder.")
    style_dim = int(fl.shape[0])
    n_mlp = len([k for k in keys if re.fullmatch(r"generator\.style\.\d+\.weight", k)])
    if n_mlp == 0:
        raise ModelLoadError(f"{name}: incomplete GPEN checkpoint: the mapping network "
                             f"('generator.style.N.weight') is missing.")
    narrow = channels[4] / 512
    multiplier = channels[64] / (256 * narrow) if 64 in channels else 2.0
    return GPENConfig(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=multiplier,
                      narrow=narrow, channels=channels)


def standard_kernel(upsample: bool) -> torch.Tensor:
    """The 4x4 [1,3,3,1] blur kernel stored in released files (x4 gain on upsampling paths)."""
    return blur_kernel(gain=4.0 if upsample else 1.0)


def check_tensors(state: dict[str, torch.Tensor], net: GPEN, name: str) -> dict[str, torch.Tensor]:
    """``state`` completed with standard blur kernels, or ``ModelLoadError`` on any mismatch with ``net``."""
    expected = net.state_dict()
    state = dict(state)
    # Blur kernels are fixed buffers; files re-saved without buffers get the standard ones back.
    for key in expected:
        if key.endswith("kernel") and key not in state:
            state[key] = standard_kernel(upsample=not key.startswith("ecd"))
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    size = net.size
    if missing:
        raise ModelLoadError(f"{name}: incomplete GPEN-{size} checkpoint: missing {len(missing)} tensors, "
                             f"e.g. {', '.join(repr(k) for k in missing[:3])}. The file is probably cut "
                             f"short or from a different model; download it again.")
    if unexpected:
        raise ModelLoadError(f"{name}: {len(unexpected)} tensors do not belong to a GPEN-{size} network, "
                             f"e.g. {', '.join(repr(k) for k in unexpected[:3])}; this is not a plain "
                             f"GPEN-BFR checkpoint.")
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        k, got, want = wrong[0]
        raise ModelLoadError(f"{name}: {len(wrong)} tensors have the wrong shape for a GPEN-{size} network "
                             f"inferred from its encoder, e.g. {k!r} is {got}, expected {want}.")
    bad = [k for k, v in state.items() if not v.is_floating_point() or not torch.isfinite(v).all()]
    if bad:
        raise ModelLoadError(f"{name}: {len(bad)} tensors hold NaN/infinite or non-float values, e.g. "
                             f"{bad[0]!r}: the file is corrupt. Download it again.")
    return state


def build_network(raw: Mapping[str, Any], name: str = "state dict", device: torch.device | str = "cpu",
                  dtype: torch.dtype | str = torch.float32) -> GPEN:
    """A ready GPEN network (eval mode, no gradients) from a state dict or a container holding one."""
    dtype = resolve_dtype(dtype, device)
    state = unwrap_state_dict(raw, name)
    config = infer_config(state, name)
    with torch.device("meta"):
        net = GPEN(config)
    state = check_tensors(state, net, name)
    net.load_state_dict(state, strict=True, assign=True)
    net = cast(net.to(device=device).eval().requires_grad_(False), dtype)
    log.info("loaded %s: GPEN %dpx (style_dim %d, n_mlp %d, channel_multiplier %g, narrow %g) on %s as %s",
             name, config.size, config.style_dim, config.n_mlp, config.channel_multiplier, config.narrow,
             device, str(dtype).removeprefix("torch."))
    return net
