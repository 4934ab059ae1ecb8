"""Loading GPEN weights safely: read a file, unwrap it, recognise it, infer the config, check it.

Nothing here executes pickled code: ``.pth``/``.pt``/``.ckpt`` files are read with
``torch.load(weights_only=True)`` and ``.safetensors`` with safetensors. Every failure raises
``ModelLoadError`` with a message that names the file and says what to do.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch

from .errors import MissingWeightsError, ModelLoadError
from .network import GPEN, GPENConfig, blur_kernel

if TYPE_CHECKING:
    from .onnx_model import OnnxGPEN

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
WEIGHT_SUFFIXES = TORCH_SUFFIXES + (".safetensors",)
CONTAINER_KEYS = ("params_ema", "g_ema", "state_dict", "params", "model", "generator_ema", "net_g")
DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}

# Key fragments of other face-restoration / vision checkpoints users keep in the same folder.
_OTHER_ARCHS = (
    ("GFPGAN", ("stylegan_decoder.", "conv_body_first.")),
    ("CodeFormer", ("fuse_convs_dict.", "ft_layers.", "position_emb")),
    ("RestoreFormer", ("encoder.conv_in.", "quantize.embedding.")),
    ("a RetinaFace face detector", ("ClassHead.", "LandmarkHead.", "BboxHead.")),
    ("a face-parsing model", ("cp.resnet.", "ffm.", "conv_out16.", "encoder.encode_block")),
    ("an ESRGAN/Real-ESRGAN upscaler", ("conv_first.", "RRDB_trunk.", "body.0.rdb1.", "model.1.sub.")),
    ("a SwinIR-type upscaler", ("layers.0.residual_group.", "patch_embed.")),
    ("a StyleGAN2 generator without GPEN's encoder", ("style.1.weight", "convs.0.conv.weight")),
)


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """Accept a torch dtype or a name such as ``"fp16"``, ``"bf16"``, ``"float32"``."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"unsupported dtype {dtype}; use float32, float16 or bfloat16")
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of fp32, fp16, bf16") from None


def check_file(path: PathLike) -> Path:
    """``path`` as a Path if it is a non-empty file; ``MissingWeightsError``/``ModelLoadError`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path.name}: the file is empty (0 bytes), so a download or copy did not finish. "
                             f"Delete {path} and download it again.")
    return path


def read_weights_file(path: PathLike) -> dict[str, Any]:
    """Read a weights file without executing code; raise ``ModelLoadError`` on anything unusable.

    For ``.onnx`` graphs this is the GPEN state dict recovered from the graph's weights and
    verified against the graph (see :mod:`gpen.onnx_model`).
    """
    path = check_file(path)
    name = path.name
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .onnx_model import read_onnx_state_dict

        return read_onnx_state_dict(path)
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix not in TORCH_SUFFIXES:
        raise ModelLoadError(f"{name}: unsupported file type {suffix!r}; GPEN weights must be "
                             f"{', '.join(WEIGHT_SUFFIXES)}.")
    return _read_torch(path)


def _corrupt(path: Path, detail: str) -> ModelLoadError:
    return ModelLoadError(f"{path.name}: truncated or corrupt file ({detail}). Delete {path} and download "
                          f"it again; compare its size with the original ({path.stat().st_size:,} bytes here).")


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _corrupt(path, f"safetensors: {e}") from None


def _read_torch(path: Path) -> dict[str, Any]:
    import pickle

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol notes from the weights-only unpickler
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Unsupported global" in text:
            match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            what = f" (it references {match.group(1)})" if match else ""
            raise ModelLoadError(
                f"{path.name}: the file contains Python objects other than tensors{what}, and loading it "
                f"would execute code from the file, which this pack never does. Use a plain state-dict "
                f"`.pth` or a `.safetensors` file of the model.") from None
        detail = re.search(r"Unsupported operand \d+|invalid load key[^.]*", text)
        raise _corrupt(path, detail.group(0) if detail else "unreadable pickle") from None
    except RuntimeError as e:  # torch's zip reader: its first sentence says what is wrong
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable archive"
        raise _corrupt(path, first.split(". ")[0][:120]) from None
    except (EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError, IndexError, KeyError, TypeError):
        raise _corrupt(path, "the data ends early or is not a PyTorch archive") from None


def unwrap_state_dict(obj: Any, name: str = "state dict", what: str = "GPEN checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensors in the usual containers (``params_ema``, ``g_ema``, ``state_dict``, ...)."""
    for _ in range(4):
        if not isinstance(obj, Mapping):
            break
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise ModelLoadError(f"{name}: not a {what} (no tensors found; expected a state dict "
                             f"of tensors, got {type(obj).__name__}).")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelLoadError(f"{name}: not a {what} (it holds no tensors).")
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


def _identify_other(keys: list[str]) -> str | None:
    for arch, fragments in _OTHER_ARCHS:
        if any(any(f in k for f in fragments) for k in keys):
            return arch
    return None


def infer_config(state: Mapping[str, torch.Tensor], name: str = "state dict") -> GPENConfig:
    """Infer size, style_dim, n_mlp and the width table from tensor names and shapes alone."""
    keys = list(state)
    if "ecd0.0.0.weight" not in state or "final_linear.0.weight" not in state:
        other = _identify_other(keys)
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


def _check_tensors(state: dict[str, torch.Tensor], net: GPEN, name: str) -> dict[str, torch.Tensor]:
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


def load_model(source: PathLike | Mapping[str, Any], device: torch.device | str = "cpu",
               dtype: torch.dtype | str = torch.float32) -> GPEN | OnnxGPEN:
    """Load a GPEN-BFR checkpoint (path or state dict) as a ready network in eval mode.

    The configuration is inferred from the weights; ``net.size`` is the face crop size and
    ``net.config`` the full configuration. ``net(x)`` takes (B, 3, S, S) RGB in -1..1.
    A ``.onnx`` file gives the same network when its weights can be mapped onto it, else an
    :class:`gpen.onnx_model.OnnxGPEN` that runs the graph with onnxruntime (``size``, ``device``,
    ``dtype`` and the call are the same; ``config`` is None).
    """
    dtype = resolve_dtype(dtype)
    if isinstance(source, Mapping):
        name, raw = "state dict", source
    else:
        path = Path(source)
        if path.suffix.lower() == ".onnx":
            from .onnx_model import load_onnx_model

            return load_onnx_model(path, device=device, dtype=dtype)
        name, raw = path.name, read_weights_file(path)
    state = unwrap_state_dict(raw, name)
    config = infer_config(state, name)
    with torch.device("meta"):
        net = GPEN(config)
    state = _check_tensors(state, net, name)
    net.load_state_dict(state, strict=True, assign=True)
    net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
    log.info("loaded %s: GPEN %dpx (style_dim %d, n_mlp %d, channel_multiplier %g, narrow %g) on %s as %s",
             name, config.size, config.style_dim, config.n_mlp, config.channel_multiplier, config.narrow,
             device, str(dtype).removeprefix("torch."))
    return net


def standard_kernel(upsample: bool) -> torch.Tensor:
    """The 4x4 [1,3,3,1] blur kernel stored in released files (x4 gain on upsampling paths)."""
    return blur_kernel(gain=4.0 if upsample else 1.0)
