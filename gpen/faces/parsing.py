"""Optional face-parsing masks for seamless paste-back.

A face parser labels every pixel of an aligned face crop (19 CelebAMask-HQ classes); the mask keeps
the face itself (skin, brows, eyes, glasses, ears, nose, mouth, lips) and drops hair, hat, neck,
necklace, earrings, clothes and background, then is softened so the restored face blends in.

Models (facexlib 0.3.0, built here and loaded safely; weights in the ``facedetection`` folder):

- ``parsenet`` (default): ``facexlib.parsing.parsenet.ParseNet(in_size=512, out_size=512,
  parsing_ch=19)``, file ``parsing_parsenet.pth``. Input RGB 512x512 normalised to -1..1
  (``(x - 0.5) / 0.5``), as facexlib's ``FaceRestoreHelper`` and ``inference_parsing_parsenet.py``
  do. ``forward`` returns ``(logits, image)``. Label order (facexlib's ParseNet inference script):
  0 background, 1 skin, 2 nose, 3 eye_g, 4 l_eye, 5 r_eye, 6 l_brow, 7 r_brow, 8 l_ear, 9 r_ear,
  10 mouth, 11 u_lip, 12 l_lip, 13 hair, 14 hat, 15 ear_r, 16 neck_l, 17 neck, 18 cloth.
- ``bisenet``: ``facexlib.parsing.bisenet.BiSeNet(num_class=19)``, file ``parsing_bisenet.pth``.
  Input RGB 512x512 normalised with the ImageNet mean ``(0.485, 0.456, 0.406)`` and std
  ``(0.229, 0.224, 0.225)`` (facexlib's ``inference_parsing.py``). ``forward`` returns
  ``(logits, logits16, logits32)``. Label order (face-parsing.PyTorch, as listed there):
  0 background, 1 skin, 2 l_brow, 3 r_brow, 4 l_eye, 5 r_eye, 6 eye_g, 7 l_ear, 8 r_ear, 9 ear_r,
  10 nose, 11 mouth, 12 u_lip, 13 l_lip, 14 neck, 15 neck_l, 16 cloth, 17 hair, 18 hat.

Note: facexlib's own paste-back colour map (``FaceRestoreHelper``) keeps ParseNet labels 1-13 and
15, i.e. hair and earrings too; the default here (:data:`FACE_PARTS`) keeps only the face.

Regions: users choose what comes from the restored face in one vocabulary (:data:`REGIONS`: skin,
brows, eyes, glasses, ears, earrings, nose, mouth, teeth, lips, hair, hat, neck, necklace, clothes,
background), mapped per parser onto its label names (:data:`REGION_LABELS`) and from there onto its
label order. The default (:data:`DEFAULT_REGIONS`) is exactly :data:`FACE_PARTS`. Neither ParseNet
nor BiSeNet has a teeth class: their ``mouth`` class is the inner mouth (teeth, tongue, the dark
between the lips), so on these parsers ``teeth`` and ``mouth`` name the same pixels, and keeping the
original teeth means leaving out both. Everything not chosen has mask 0 and comes back from the
original, with the same softened edges.

Softening: at the 512 parsing resolution one Gaussian blur with sigma ``11 * sqrt(2)`` (the same
width as facexlib's two passes of sigma 11); then, at the crop size, a linear ramp to exactly 0 over
the outer ``edge`` pixels (10 at 512, scaled with the crop; facexlib zeroes a hard 10-pixel border
instead), so nothing of the mask's border shows after paste-back.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from .detect import load_weights_into
from ..weights.download import ensure_weights
from ..errors import InvalidInputError

logger = logging.getLogger(__name__)

INPUT_SIZE = 512
WEIGHTS_KIND = "facedetection"

PARSENET_LABELS = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)  # fmt: skip
BISENET_LABELS = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)  # fmt: skip

# Parts kept by default: the face, without hair, hat, neck, necklace, earrings, clothes, background.
FACE_PARTS = ("skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "nose", "mouth", "u_lip", "l_lip")

# One region vocabulary for users -> the CelebAMask-HQ label names both parsers use (orders differ).
# "teeth": no parser here has a teeth class; their "mouth" class is the inner mouth (teeth, tongue).
_CELEBAMASK_REGIONS: dict[str, tuple[str, ...]] = {
    "skin": ("skin",), "brows": ("l_brow", "r_brow"), "eyes": ("l_eye", "r_eye"), "glasses": ("eye_g",),
    "ears": ("l_ear", "r_ear"), "earrings": ("ear_r",), "nose": ("nose",), "mouth": ("mouth",),
    "teeth": ("mouth",), "lips": ("u_lip", "l_lip"), "hair": ("hair",), "hat": ("hat",), "neck": ("neck",),
    "necklace": ("neck_l",), "clothes": ("cloth",), "background": ("background",),
}  # fmt: skip
REGIONS = tuple(_CELEBAMASK_REGIONS)
# parser -> region -> its label names (a parser with a teeth class would map "teeth" to it here)
REGION_LABELS: dict[str, dict[str, tuple[str, ...]]] = {
    "parsenet": _CELEBAMASK_REGIONS,
    "bisenet": _CELEBAMASK_REGIONS,
}
# The default regions: exactly FACE_PARTS.
DEFAULT_REGIONS = ("skin", "brows", "eyes", "glasses", "ears", "nose", "mouth", "lips")

# model -> (weights file, label names, normalisation mean, std)
PARSING_MODELS: dict[str, tuple[str, tuple[str, ...], tuple[float, ...], tuple[float, ...]]] = {
    "parsenet": ("parsing_parsenet.pth", PARSENET_LABELS, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "bisenet": ("parsing_bisenet.pth", BISENET_LABELS, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

DEFAULT_BLUR_SIGMA = 11.0 * math.sqrt(2.0)
DEFAULT_EDGE = 10


PARSER_BYTES_PER_PIXEL = 48 * 4
"""Rough working memory of the parser per pixel of its input (float32 activations alive at the
widest layers, plus the input copies): an estimate for a host's memory manager, not measured."""


def parser_memory_bytes(faces: int) -> int:
    """Estimated working memory (bytes, weights excluded) of parsing ``faces`` crops at ``INPUT_SIZE``."""
    return int(faces) * INPUT_SIZE * INPUT_SIZE * PARSER_BYTES_PER_PIXEL


def label_indices(labels: Sequence[str], parts: Iterable[str]) -> tuple[int, ...]:
    """Indices of ``parts`` (label names) in a model's ``labels``; unknown names are an error."""
    parts = tuple(parts)
    unknown = [p for p in parts if p not in labels]
    if unknown:
        raise InvalidInputError(f"Unknown face parts {unknown}; known parts: {', '.join(labels[1:])}.")
    return tuple(sorted(labels.index(p) for p in parts))


def parse_regions(regions: str | Iterable[str] | None) -> tuple[str, ...]:
    """Region names from a comma/space separated string or a list (None: :data:`DEFAULT_REGIONS`).

    Names are case-insensitive and checked against :data:`REGIONS`; duplicates are dropped, the
    order is kept. An empty choice is an error (nothing would be restored).
    """
    if regions is None:
        return DEFAULT_REGIONS
    if isinstance(regions, str):
        names = regions.replace(",", " ").split()
    else:
        try:
            names = [str(r) for r in regions]
        except TypeError:
            raise InvalidInputError(f"regions must be a comma-separated string or a list of names, got "
                                    f"{type(regions).__name__}.") from None
    names = [n.strip().lower() for n in names if n.strip()]
    unknown = [n for n in names if n not in REGIONS]
    if unknown:
        raise InvalidInputError(f"Unknown face regions {unknown}; choose from: {', '.join(REGIONS)}.")
    if not names:
        raise InvalidInputError(f"Choose at least one face region to restore, from: {', '.join(REGIONS)}.")
    return tuple(dict.fromkeys(names))


def region_parts(model: str, regions: str | Iterable[str] | None) -> tuple[str, ...]:
    """The label names of parser ``model`` that ``regions`` (see :func:`parse_regions`) select."""
    if model not in REGION_LABELS:
        raise InvalidInputError(f"Unknown face parsing model {model!r}; choose one of {', '.join(PARSING_MODELS)}.")
    table = REGION_LABELS[model]
    parts: list[str] = []
    for name in parse_regions(regions):
        parts.extend(p for p in table[name] if p not in parts)
    return tuple(parts)


def labels_to_mask(label_map: torch.Tensor, keep: Sequence[int]) -> torch.Tensor:
    """Hard mask (float 0/1) of the pixels whose label is in ``keep``; same shape as ``label_map``."""
    keep_t = torch.as_tensor(list(keep), dtype=label_map.dtype, device=label_map.device)
    return torch.isin(label_map, keep_t).float()


def logits_to_mask(logits: torch.Tensor, keep: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) class scores -> (N, H, W) hard mask of the argmax labels in ``keep``."""
    return labels_to_mask(logits.argmax(dim=1), keep)


def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur_mask(mask: torch.Tensor, sigma: float = DEFAULT_BLUR_SIGMA) -> torch.Tensor:
    """Gaussian blur (``sigma`` px, reflected borders like OpenCV's default) of a (N, H, W) mask."""
    if mask.ndim != 3:
        raise InvalidInputError(f"mask must have shape (N, H, W), got {tuple(mask.shape)}.")
    x = mask.float().unsqueeze(1)
    if sigma > 0:
        k = _gaussian_kernel(sigma, x.device)
        r = k.numel() // 2
        if r >= min(x.shape[-2:]):
            raise InvalidInputError(f"blur sigma {sigma} is too large for a {tuple(x.shape[-2:])} mask.")
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return x.squeeze(1)


def fade_edges(mask: torch.Tensor, edge: int) -> torch.Tensor:
    """Multiply a (N, H, W) mask by a ramp rising linearly from 0 (outermost pixels) to 1 over ``edge`` px."""
    if edge <= 0:
        return mask
    h, w = mask.shape[-2:]
    ys = torch.arange(h, device=mask.device, dtype=torch.float32)
    xs = torch.arange(w, device=mask.device, dtype=torch.float32)
    ry = (torch.minimum(ys, h - 1 - ys) / edge).clamp(0, 1)
    rx = (torch.minimum(xs, w - 1 - xs) / edge).clamp(0, 1)
    return mask * torch.minimum(ry[:, None], rx[None, :])


def soften_mask(mask: torch.Tensor, sigma: float = DEFAULT_BLUR_SIGMA, edge: int = DEFAULT_EDGE) -> torch.Tensor:
    """:func:`blur_mask` then :func:`fade_edges`, clamped to 0..1: the outermost pixels are exactly 0."""
    return fade_edges(blur_mask(mask, sigma), edge).clamp(0.0, 1.0)


def build_parsing_net(model: str) -> torch.nn.Module:
    """facexlib's ParseNet (512) or BiSeNet (19 classes) with untrained weights, eval mode."""
    if model == "parsenet":
        from facexlib.parsing.parsenet import ParseNet

        return ParseNet(in_size=INPUT_SIZE, out_size=INPUT_SIZE, parsing_ch=19).eval()
    if model == "bisenet":
        from facexlib.parsing.bisenet import BiSeNet

        return BiSeNet(num_class=19).eval()
    raise InvalidInputError(f"Unknown face parsing model {model!r}; choose one of {', '.join(PARSING_MODELS)}.")


class FaceParser:
    """Soft face masks for batches of aligned face crops.

    ``model``: ``"parsenet"`` (default) or ``"bisenet"``. Weights come from ``weights_path`` or are
    found/downloaded through :func:`gpen.weights.download.ensure_weights` in the ``facedetection`` folder
    (``extra_dirs`` searched first). ``parts``: label names kept in the mask (default
    :data:`FACE_PARTS`), or ``regions`` (:data:`REGIONS` names, instead of ``parts``); :meth:`masks`
    can choose other regions per call. ``blur_sigma`` /
    ``edge``: softening in pixels of the 512 parsing resolution (see :func:`soften_mask`; the edge
    ramp is scaled to the crop size). ``net``: an already built network (skips the weights).
    """

    def __init__(
        self,
        model: str = "parsenet",
        device: torch.device | str = "cpu",
        weights_path: str | os.PathLike | None = None,
        extra_dirs: Iterable[str | os.PathLike] = (),
        allow_download: bool = True,
        *,
        parts: Iterable[str] = FACE_PARTS,
        regions: str | Iterable[str] | None = None,
        blur_sigma: float = DEFAULT_BLUR_SIGMA,
        edge: int = DEFAULT_EDGE,
        batch_size: int = 8,
        net: torch.nn.Module | None = None,
    ) -> None:
        if model not in PARSING_MODELS:
            raise InvalidInputError(f"Unknown face parsing model {model!r}; choose one of {', '.join(PARSING_MODELS)}.")
        file_name, labels, mean, std = PARSING_MODELS[model]
        self.model = model
        self.keep = label_indices(labels, parts if regions is None else region_parts(model, regions))
        self.blur_sigma = float(blur_sigma)
        self.edge = int(edge)
        self.batch_size = max(1, int(batch_size))
        if net is None:
            if weights_path is None:
                weights_path = ensure_weights(file_name, WEIGHTS_KIND, extra_dirs, allow_download=allow_download)
            net = load_weights_into(build_parsing_net(model), weights_path, f"face parsing ({model})")
            logger.info("loaded %s from %s on %s", model, weights_path, device)
        self.net = net.to(device).eval()
        dev = torch.device(device)
        self._mean = torch.tensor(mean, device=dev).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=dev).view(1, 3, 1, 1)

    @property
    def device(self) -> torch.device:
        """Where the network's weights are (a host's memory manager may move them)."""
        return next(self.net.parameters(), self._mean).device

    @property
    def network(self) -> torch.nn.Module:
        """The parsing network, for a host that manages its memory (inputs go to :attr:`device`)."""
        return self.net

    def to(self, device: torch.device | str) -> FaceParser:
        """Move the parsing network to ``device``; returns self."""
        self.net.to(device)
        self._mean, self._std = self._mean.to(device), self._std.to(device)
        return self

    def network_input(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) RGB 0..1 -> (N, 3, 512, 512) normalised the way the parsing model was trained."""
        x = crops.to(self.device, torch.float32)
        if x.shape[-1] != INPUT_SIZE:
            x = F.interpolate(
                x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                antialias=x.shape[-1] > INPUT_SIZE,
            )
        return (x - self._mean.to(x.device)) / self._std.to(x.device)

    def region_indices(self, regions: str | Iterable[str] | None) -> tuple[int, ...]:
        """This parser's label indices for ``regions`` (see :func:`parse_regions`)."""
        return label_indices(PARSING_MODELS[self.model][1], region_parts(self.model, regions))

    @torch.inference_mode()
    def masks(self, crops: torch.Tensor, regions: str | Iterable[str] | None = None) -> torch.Tensor:
        """Soft face masks (N, S, S), values 0..1, for aligned crops (N, 3, S, S) RGB 0..1.

        ``regions``: the :data:`REGIONS` to keep (None: the parts given at construction). Returned
        on the crops' device, in float32. The input is not modified.
        """
        if not isinstance(crops, torch.Tensor) or crops.ndim != 4 or crops.shape[1] != 3:
            shape = tuple(crops.shape) if isinstance(crops, torch.Tensor) else type(crops).__name__
            raise InvalidInputError(f"crops must be a tensor (N, 3, S, S) RGB 0..1, got {shape}.")
        if crops.shape[2] != crops.shape[3] or crops.shape[2] < 8:
            raise InvalidInputError(f"crops must be square and not tiny, got {tuple(crops.shape)}.")
        if not crops.is_floating_point():
            raise InvalidInputError(f"crops must be float RGB in 0..1, got dtype {crops.dtype}.")
        keep = self.keep if regions is None else self.region_indices(regions)
        size = crops.shape[-1]
        edge = max(1, round(self.edge * size / INPUT_SIZE)) if self.edge > 0 else 0
        out = []
        for start in range(0, crops.shape[0], self.batch_size):
            logits = self.net(self.network_input(crops[start : start + self.batch_size]))[0]
            mask = blur_mask(logits_to_mask(logits, keep), self.blur_sigma)
            if size != INPUT_SIZE:
                mask = F.interpolate(
                    mask.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False,
                    antialias=size < INPUT_SIZE,
                ).squeeze(1)
            out.append(fade_edges(mask, edge).clamp(0.0, 1.0))
        if not out:
            return torch.zeros((0, size, size), device=crops.device)
        return torch.cat(out).to(crops.device)


__all__ = [
    "BISENET_LABELS",
    "DEFAULT_REGIONS",
    "FACE_PARTS",
    "FaceParser",
    "PARSENET_LABELS",
    "PARSING_MODELS",
    "REGIONS",
    "REGION_LABELS",
    "blur_mask",
    "build_parsing_net",
    "fade_edges",
    "label_indices",
    "labels_to_mask",
    "logits_to_mask",
    "parse_regions",
    "region_parts",
    "soften_mask",
]
