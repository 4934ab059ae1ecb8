"""Reading weight files safely: ``.pth``/``.pt``/``.ckpt``/``.bin`` and ``.safetensors``.

Nothing here executes pickled code: PyTorch files are read with ``torch.load(weights_only=True)``
and ``.safetensors`` with safetensors. Every failure raises ``ModelLoadError`` with a message that
names the file and says what to do. (``.onnx`` graphs are read by :mod:`gpen.model.onnx_loading`;
:func:`gpen.model.loader.read_weights_file` picks the reader.)

Containers :func:`unwrap_state_dict` opens:

- a plain state dict (the released ``GPEN-BFR-*.pth``, and ModelScope's ``pytorch_model.pt`` /
  ``pytorch_model-2048.pt``, which ModelScope's pipeline loads with ``torch.load`` straight into its
  ``FullGenerator``);
- dicts holding one under a usual key (``params_ema``, ``g_ema``, ``state_dict``, ...), e.g. a
  ModelScope trainer checkpoint ``{"meta": ..., "state_dict": ..., "optimizer": ...}``;
- a state dict of several networks under prefixes, such as the one of ModelScope's training model
  (``generator.*``, ``g_ema.*``, ``discriminator.*``): the network holding ``anchor`` is taken,
  the EMA copy first;
- ``module.`` / ``_orig_mod.`` prefixes (DataParallel, ``torch.compile``) are stripped.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import torch

from ..errors import MissingWeightsError, ModelLoadError

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
WEIGHT_SUFFIXES = TORCH_SUFFIXES + (".safetensors",)
CONTAINER_KEYS = ("params_ema", "g_ema", "state_dict", "params", "model", "generator_ema", "net_g")
GPEN_ANCHOR = "ecd0.0.0.weight"
"""The tensor every GPEN network has (its first encoder convolution): marks the GPEN sub-model."""

# Key fragments of other face-restoration / vision checkpoints users keep in the same folder.
OTHER_ARCHITECTURES = (
    ("GFPGAN", ("stylegan_decoder.", "conv_body_first.")),
    ("CodeFormer", ("fuse_convs_dict.", "ft_layers.", "position_emb")),
    ("RestoreFormer", ("encoder.conv_in.", "quantize.embedding.")),
    ("a RetinaFace face detector", ("ClassHead.", "LandmarkHead.", "BboxHead.")),
    ("a face-parsing model", ("cp.resnet.", "ffm.", "conv_out16.", "encoder.encode_block")),
    ("an ESRGAN/Real-ESRGAN upscaler", ("conv_first.", "RRDB_trunk.", "body.0.rdb1.", "model.1.sub.")),
    ("a SwinIR-type upscaler", ("layers.0.residual_group.", "patch_embed.")),
    ("a StyleGAN2 generator without GPEN's encoder", ("style.1.weight", "convs.0.conv.weight")),
)


def check_file(path: PathLike) -> Path:
    """``path`` as a Path if it is a non-empty file; ``MissingWeightsError``/``ModelLoadError`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path.name}: the file is empty (0 bytes), so a download or copy did not finish. "
                             f"Delete {path} and download it again.")
    return path


def corrupt_file_error(path: Path, detail: str) -> ModelLoadError:
    """The error for a file that cannot be parsed: names it, says why and what to do."""
    return ModelLoadError(f"{path.name}: truncated or corrupt file ({detail}). Delete {path} and download "
                          f"it again; compare its size with the original ({path.stat().st_size:,} bytes here).")


def read_safetensors(path: Path) -> dict[str, Any]:
    """Every tensor of a ``.safetensors`` file, on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise corrupt_file_error(path, f"safetensors: {e}") from None


def read_torch_file(path: Path) -> dict[str, Any]:
    """A PyTorch file's contents, read without executing code (tensors and plain containers only)."""
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
        raise corrupt_file_error(path, detail.group(0) if detail else "unreadable pickle") from None
    except RuntimeError as e:  # torch's zip reader: its first sentence says what is wrong
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable archive"
        raise corrupt_file_error(path, first.split(". ")[0][:120]) from None
    except (EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError, IndexError, KeyError, TypeError):
        raise corrupt_file_error(path, "the data ends early or is not a PyTorch archive") from None


def unwrap_state_dict(obj: Any, name: str = "state dict", what: str = "GPEN checkpoint",
                      anchor: str | None = GPEN_ANCHOR) -> dict[str, torch.Tensor]:
    """Find the tensors in the usual containers (``params_ema``, ``g_ema``, ``state_dict``, ...).

    When the tensors of several networks share one dict under prefixes and ``anchor`` is not among
    the keys, the network whose keys end in ``anchor`` is returned without its prefix (see
    :func:`select_submodel`). Pass ``anchor=None`` to keep every tensor.
    """
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
    return select_submodel(tensors, anchor, name) if anchor else tensors


def select_submodel(tensors: dict[str, torch.Tensor], anchor: str, name: str = "state dict") -> dict[str, torch.Tensor]:
    """The tensors of the one network in ``tensors`` that holds ``anchor``, without its key prefix.

    ``tensors`` is returned as it is when ``anchor`` is a key or no key ends in ``.anchor``. With
    several candidates (a training state such as ModelScope's ``generator.``, ``g_ema.``,
    ``discriminator.``) the EMA copy wins (a prefix containing ``ema``), then the shortest prefix.
    """
    if anchor in tensors:
        return tensors
    prefixes = sorted({k[: -len(anchor)] for k in tensors if k.endswith("." + anchor)},
                      key=lambda p: ("ema" not in p.lower(), len(p), p))
    if not prefixes:
        return tensors
    pick = prefixes[0]
    log.info("%s: using the network under %r (of %s)", name, pick, ", ".join(repr(p) for p in prefixes))
    return {k[len(pick):]: v for k, v in tensors.items() if k.startswith(pick)}


def identify_other_architecture(keys: list[str]) -> str | None:
    """The name of a known non-GPEN architecture whose tensor names appear in ``keys``, else None."""
    for arch, fragments in OTHER_ARCHITECTURES:
        if any(any(f in k for f in fragments) for k in keys):
            return arch
    return None
