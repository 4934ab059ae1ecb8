"""The weight files the pack knows how to download: names, model folders, URLs and checks.

Sources of the registry (see the comments at each entry):

- GPEN checkpoints: the URLs published in the official GPEN README
  (``https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/GPEN-BFR-<N>.pth``).
- facexlib files: the URLs in facexlib 0.3.0's ``facexlib/detection/__init__.py`` and
  ``facexlib/parsing/__init__.py``.
- sha256 and sizes: Git LFS pointers of Hugging Face mirrors (an LFS pointer records the sha256 and
  byte size of the stored file); each value is recorded only where such a pointer was found, and
  several independent mirrors agreed.
- XSeg occluders (DeepFaceLab, GPL-3.0): the URLs FaceFusion 3.x builds in ``facefusion/download.py``
  (``resolve_download_url``) and ``facefusion/choices.py`` (``download_provider_set``: GitHub
  releases of ``facefusion/facefusion-assets``, then ``huggingface.co`` / ``hf-mirror.com``
  ``facefusion/<release>``) for the releases named in ``facefusion/face_masker.py``. FaceFusion checks
  them with CRC32 ``.hash`` files, not sha256; see the entries for where their sha256 and size come from.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInputError


@dataclass(frozen=True)
class WeightsFile:
    """A downloadable weights file: its name, model folder kind, URLs (first is primary) and checks."""

    name: str
    kind: str
    urls: tuple[str, ...]
    sha256: str | None = None
    size: int | None = None


_GPEN_OSS = "https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/"
_FACEXLIB = "https://github.com/xinntao/facexlib/releases/download/"
# A ComfyUI ``models/facedetection`` mirror on Hugging Face whose LFS pointers match the hashes below.
_HF_FACEDETECTION = "https://huggingface.co/fofr/comfyui/resolve/main/facedetection/"


def _facefusion_urls(release: str, file_name: str) -> tuple[str, ...]:
    """FaceFusion's download locations of ``file_name`` in ``release`` (GitHub first, as FaceFusion)."""
    return (
        f"https://github.com/facefusion/facefusion-assets/releases/download/{release}/{file_name}",
        f"https://huggingface.co/facefusion/{release}/resolve/main/{file_name}",
        f"https://hf-mirror.com/facefusion/{release}/resolve/main/{file_name}",
    )

REGISTRY: dict[str, WeightsFile] = {
    f.name: f
    for f in (
        # No published hash or size found for the 256/1024/2048 checkpoints.
        WeightsFile("GPEN-BFR-256.pth", "facerestore_models", (_GPEN_OSS + "GPEN-BFR-256.pth",)),
        # sha256/size: LFS pointer of huggingface.co/akhaliq/GPEN-BFR-512 (commit e6e4f31, "Upload
        # GPEN-BFR-512.pth"); the same pointer is in huggingface.co/vinthony/videoretalking and
        # camenduru/video-retalking. The size matches 71,005,559 float32 values plus pickle framing.
        WeightsFile(
            "GPEN-BFR-512.pth",
            "facerestore_models",
            (
                _GPEN_OSS + "GPEN-BFR-512.pth",
                "https://huggingface.co/akhaliq/GPEN-BFR-512/resolve/main/GPEN-BFR-512.pth",
            ),
            sha256="f1002c41add95b0decad69604d80455576f7187dd99ca16bd611bcfd44c10b51",
            size=284_085_738,
        ),
        WeightsFile("GPEN-BFR-1024.pth", "facerestore_models", (_GPEN_OSS + "GPEN-BFR-1024.pth",)),
        WeightsFile("GPEN-BFR-2048.pth", "facerestore_models", (_GPEN_OSS + "GPEN-BFR-2048.pth",)),
        # sha256/size: LFS pointers of huggingface.co/fofr/comfyui (facedetection/), krnl/
        # detection_Resnet50_Final, salmonrk/facedetection, vdo/hallo2 (all identical).
        WeightsFile(
            "detection_Resnet50_Final.pth",
            "facedetection",
            (_FACEXLIB + "v0.1.0/detection_Resnet50_Final.pth", _HF_FACEDETECTION + "detection_Resnet50_Final.pth"),
            sha256="6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
            size=109_497_761,
        ),
        # sha256/size: LFS pointers of huggingface.co/chaowenguo/pal (commit ca84b18) and fofr/comfyui.
        WeightsFile(
            "detection_mobilenet0.25_Final.pth",
            "facedetection",
            (
                _FACEXLIB + "v0.1.0/detection_mobilenet0.25_Final.pth",
                _HF_FACEDETECTION + "detection_mobilenet0.25_Final.pth",
            ),
            sha256="2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
            size=1_789_735,
        ),
        # sha256/size: LFS pointers of huggingface.co/fofr/comfyui (facedetection/), salmonrk/
        # facedetection, yutaakiyama/inswapper_128.onnx (commit 40bd523) (all identical).
        WeightsFile(
            "parsing_parsenet.pth",
            "facedetection",
            (_FACEXLIB + "v0.2.2/parsing_parsenet.pth", _HF_FACEDETECTION + "parsing_parsenet.pth"),
            sha256="3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
            size=85_331_193,
        ),
        # sha256/size: LFS pointer of huggingface.co/ddrfan/FaceXLib (commit 407f696); same sha256 in
        # wei112/ziyong and wiikoo's ComfyUI models backup. No Hugging Face fallback URL recorded.
        WeightsFile(
            "parsing_bisenet.pth",
            "facedetection",
            (_FACEXLIB + "v0.2.0/parsing_bisenet.pth",),
            sha256="468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567",
            size=53_289_463,
        ),
        # XSeg occluders. No LFS pointer of huggingface.co/facefusion/models-3.1.0 or -3.2.0 was found
        # with the code search; sha256/size: the same values in the model manifests of several public
        # projects (five or more files per value, code search 2026; one records them as taken from
        # huggingface.co/facefusion/models-3.1.0, one as checked against FaceFusion's published CRC32
        # f207afe3 for xseg_1). Second-hand, so a mismatch names the values it expected.
        WeightsFile(
            "xseg_1.onnx",
            "facedetection",
            _facefusion_urls("models-3.1.0", "xseg_1.onnx"),
            sha256="c4d1498b8a03b5fe2a3a5d2ef2a0402ab03bd51edaf5b2d8d5fb764702a97dd3",
            size=70_324_286,
        ),
        WeightsFile(
            "xseg_2.onnx",
            "facedetection",
            _facefusion_urls("models-3.1.0", "xseg_2.onnx"),
            sha256="cd9a0879eaf43841d765472cf1f8c330dbf9dcb03da0eace93e95f3bcc399042",
            size=70_324_286,
        ),
        WeightsFile(
            "xseg_3.onnx",
            "facedetection",
            _facefusion_urls("models-3.2.0", "xseg_3.onnx"),
            sha256="48ccd7e8541e159a5a754ec9e62df2f12065f7df8f9af842c1750342c6533559",
            size=70_327_709,
        ),
    )
}

def known_file(name: str | WeightsFile) -> WeightsFile:
    """The registry entry for ``name`` (a :class:`WeightsFile` is returned as it is)."""
    if isinstance(name, WeightsFile):
        return name
    try:
        return REGISTRY[name]
    except KeyError:
        raise InvalidInputError(
            f"{name!r} is not a known downloadable weights file; known files: {', '.join(sorted(REGISTRY))}."
        ) from None
