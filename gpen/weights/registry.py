"""The weight files the pack knows how to download: names, model folders, URLs and checks.

Every size and sha256 below was read from a public source named in the comment next to it: the Git
LFS pointer of a Hugging Face repository (a pointer records ``oid sha256:`` and ``size`` of the
stored file; the same commit pages show them as "Git LFS Details"). Where no such record was found
the value is ``None`` and the file is checked by its tensor layout only. No value is derived from a
download made here (this machine has no access to the files). One exception, said at the entries:
the XSeg occluders, for which no LFS pointer was found and the agreeing values of several public
model manifests are recorded.

URLs are tried in order: Hugging Face mirrors first (fast, resumable, hashed), then ModelScope, where
the GPEN authors publish the 1024 and 2048 models since 2023 (their README: "GPEN-BFR-1024 and
GPEN-BFR-2048 are now publicly available. Please download them via ModelScope"), then the original
OSS links of the GPEN README (the 1024/2048 ones were taken down in 2022; kept last in case they come
back). ModelScope's ``pytorch_model.pt`` files are plain state dicts of the same network (ModelScope's
``ImagePortraitEnhancementPipeline`` loads them with ``torch.load(weights_only=True)`` straight into
``FullGenerator(size, 512, 8, channel_multiplier=2, narrow=1)`` with ``strict=True``) but no byte
size or hash of them is published, so a file from ModelScope (or from the OSS links, whose bytes
nobody recorded) is accepted on its exact released tensor layout: those URLs are listed in
``unhashed``. ModelScope's file list carries a ``Sha256`` per file: a ModelScope download is checked
against it, read at download time (:func:`manifest_for`), besides its layout.

``.onnx`` entries: the GPEN exports ReActor ships (Hugging Face dataset ``Gourieff/ReActor``,
``models/facerestore_models/``) and the ones FaceFusion ships (``facefusion/models-3.0.0`` on
Hugging Face and the ``models-3.0.0`` release of ``facefusion/facefusion-assets`` on GitHub). They
are different exports (different bytes) of the same checkpoints and keep their own file names.

XSeg occluders (``xseg_1/2/3.onnx``, DeepFaceLab, GPL-3.0, for occlusion masks): the locations
FaceFusion 3.x builds (``facefusion/download.py`` ``resolve_download_url`` with the providers of
``facefusion/choices.py``: the GitHub releases of ``facefusion/facefusion-assets``, then
``huggingface.co`` and ``hf-mirror.com`` ``facefusion/<release>``) for the releases its
``facefusion/face_masker.py`` names (``models-3.1.0``; ``models-3.2.0`` for ``xseg_3``). FaceFusion
checks them with CRC32 ``.hash`` files; a downloaded graph must also open in onnxruntime with the
occluder's signature (:func:`gpen.faces.occlusion.load_xseg`).

Set ``GPEN_MIRROR`` to a base URL to try ``$GPEN_MIRROR/<file name>`` before every other URL
(see :func:`gpen.weights.download.candidate_urls`).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from ..errors import InvalidInputError


@dataclass(frozen=True)
class WeightsFile:
    """A downloadable weights file: its name, model folder kind, URLs in the order to try, and checks.

    ``sha256``/``size`` describe the bytes at every URL except those listed in ``unhashed`` (other
    serialisations of the same weights, or sources nobody published a hash for), which are checked
    by layout only. ``model`` names the released GPEN model whose exact tensor layout a ``.pth``
    must have; ``origin`` says who publishes the file.
    """

    name: str
    kind: str
    urls: tuple[str, ...]
    sha256: str | None = None
    size: int | None = None
    unhashed: tuple[str, ...] = ()
    model: str | None = None
    origin: str = ""

    def __post_init__(self) -> None:
        stray = [u for u in self.unhashed if u not in self.urls]
        if stray:
            raise ValueError(f"{self.name}: unhashed URLs not among its URLs: {stray}")

    def hashed(self, url: str) -> bool:
        """Whether ``size``/``sha256`` (when known) describe the bytes served at ``url``."""
        return url not in self.unhashed

    @property
    def is_onnx(self) -> bool:
        """True for an ``.onnx`` graph (checked by size and sha256; its layout is read when loaded)."""
        return self.name.lower().endswith(".onnx")


_MS_FILE_URL = re.compile(r"(?P<base>https?://[^?#]+/api/v1/models/[^/?#]+/[^/?#]+)/repo\?(?P<query>[^#]*)")


def manifest_for(url: str) -> tuple[str, str] | None:
    """(manifest URL, file path) for a ModelScope file download URL (``.../api/v1/models/<org>/<id>/repo?
    Revision=R&FilePath=P``): the repository's file list (``.../repo/files?Revision=R&Recursive=true``)
    records a ``Sha256`` and ``Size`` for each file (``Data.Files[].Path``), read at download time.
    None for other URLs."""
    match = _MS_FILE_URL.fullmatch(url)
    if match is None:
        return None
    query = urllib.parse.parse_qs(match.group("query"))
    path = query.get("FilePath", [None])[0]
    if not path:
        return None
    revision = query.get("Revision", ["master"])[0]
    return f"{match.group('base')}/repo/files?Revision={revision}&Recursive=true", path


RESTORE = "facerestore_models"
DETECTION = "facedetection"

_GPEN_OSS = "https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/"
_MS_API = "https://modelscope.cn/api/v1/models/"
_MS_512 = "cv_gpen_image-portrait-enhancement"
_MS_HIRES = "cv_gpen_image-portrait-enhancement-hires"
_REACTOR = "https://huggingface.co/datasets/Gourieff/ReActor/resolve/main/models/facerestore_models/"
_FOFR = "https://huggingface.co/fofr/comfyui/resolve/main/"
_FACEFUSION_HF = "https://huggingface.co/facefusion/models-3.0.0/resolve/main/"
_FACEFUSION_GH = "https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/"
_DEEPFAKEAPP = "https://huggingface.co/DeepFakeApp/model/resolve/main/"
_UWG_FFFF = "https://huggingface.co/uwg/modelz_base/resolve/main/Extras/ffff_assets/"
_FACEXLIB = "https://github.com/xinntao/facexlib/releases/download/"
_HF_FACEDETECTION = _FOFR + "facedetection/"


def _facefusion(release: str, file_name: str) -> tuple[str, ...]:
    """FaceFusion's download locations of ``file_name`` in ``release`` (GitHub first, as FaceFusion tries them)."""
    return (f"https://github.com/facefusion/facefusion-assets/releases/download/{release}/{file_name}",
            f"https://huggingface.co/facefusion/{release}/resolve/main/{file_name}",
            f"https://hf-mirror.com/facefusion/{release}/resolve/main/{file_name}")


def _modelscope(org: str, model_id: str, file_path: str) -> str:
    """ModelScope's file download URL (the form ``modelscope.hub.file_download.get_file_download_url`` builds)."""
    return f"{_MS_API}{org}/{model_id}/repo?Revision=master&FilePath={file_path}"


def _gpen_pth(size: int, urls: tuple[str, ...], unhashed: tuple[str, ...], origin: str,
              sha256: str | None = None, nbytes: int | None = None) -> WeightsFile:
    return WeightsFile(f"GPEN-BFR-{size}.pth", RESTORE, urls, sha256=sha256, size=nbytes, unhashed=unhashed,
                       model=f"GPEN-BFR-{size}", origin=origin)


def _onnx(name: str, model: str, urls: tuple[str, ...], sha256: str, nbytes: int, origin: str) -> WeightsFile:
    return WeightsFile(name, RESTORE, urls, sha256=sha256, size=nbytes, model=model, origin=origin)


_MS_512_URLS = (_modelscope("damo", _MS_512, "pytorch_model.pt"), _modelscope("iic", _MS_512, "pytorch_model.pt"))
_MS_1024_URLS = (_modelscope("damo", _MS_HIRES, "pytorch_model.pt"), _modelscope("iic", _MS_HIRES, "pytorch_model.pt"))
_MS_2048_URLS = (_modelscope("damo", _MS_HIRES, "pytorch_model-2048.pt"),
                 _modelscope("iic", _MS_HIRES, "pytorch_model-2048.pt"))

_FILES = (
    # ---- GPEN checkpoints (.pth) ---------------------------------------------------------------
    # 256: only the GPEN README's OSS link is known; no Hugging Face mirror or published hash found.
    _gpen_pth(256, (_GPEN_OSS + "GPEN-BFR-256.pth",), (_GPEN_OSS + "GPEN-BFR-256.pth",),
              "GPEN authors (GPEN README, OSS)"),
    # sha256/size: LFS pointer of huggingface.co/akhaliq/GPEN-BFR-512, commit
    # e6e4f31c275697a77fb0ee3e0a273c3313378dfe ("Upload GPEN-BFR-512.pth with git-lfs"); the same
    # pointer (SHA256 f1002c41..., 284 MB) is shown for vinthony/videoretalking (blob 4a23188) and
    # camenduru/video-retalking (c9234f7). The ModelScope 512 model (damo/cv_gpen_image-portrait-
    # enhancement, pytorch_model.pt) has no published hash; the OSS file's bytes were never recorded.
    _gpen_pth(512,
              ("https://huggingface.co/akhaliq/GPEN-BFR-512/resolve/main/GPEN-BFR-512.pth",
               "https://huggingface.co/vinthony/videoretalking/resolve/main/GPEN-BFR-512.pth",
               "https://huggingface.co/camenduru/video-retalking/resolve/main/GPEN-BFR-512.pth",
               *_MS_512_URLS, _GPEN_OSS + "GPEN-BFR-512.pth"),
              (*_MS_512_URLS, _GPEN_OSS + "GPEN-BFR-512.pth"),
              "GPEN authors (Hugging Face mirrors of the README file; ModelScope; OSS)",
              sha256="f1002c41add95b0decad69604d80455576f7187dd99ca16bd611bcfd44c10b51", nbytes=284_085_738),
    # 1024/2048: published on ModelScope (damo/cv_gpen_image-portrait-enhancement-hires:
    # pytorch_model.pt is the 1024 model, pytorch_model-2048.pt the 2048 one; the model moved to the
    # "iic" organisation, so both ids are tried); no Hugging Face mirror of the .pth and no hash found.
    _gpen_pth(1024, (*_MS_1024_URLS, _GPEN_OSS + "GPEN-BFR-1024.pth"),
              (*_MS_1024_URLS, _GPEN_OSS + "GPEN-BFR-1024.pth"),
              "GPEN authors (ModelScope; OSS link taken down in 2022)"),
    _gpen_pth(2048, (*_MS_2048_URLS, _GPEN_OSS + "GPEN-BFR-2048.pth"),
              (*_MS_2048_URLS, _GPEN_OSS + "GPEN-BFR-2048.pth"),
              "GPEN authors (ModelScope; OSS link taken down in 2022)"),
    # ---- ReActor's ONNX exports (Hugging Face dataset Gourieff/ReActor) -------------------------
    # sha256/size: LFS pointer in Gourieff's commit 263147787a0e137d724728899c4e8d490967fd7a
    # ("Upload GPEN-BFR-512.onnx", datasets/Gourieff/ReActor); the same pointer in fofr/comfyui commit
    # a97112c0a554421e5e7ac7c46f6b17004f62cad1 (facerestore_models/GPEN-BFR-512.onnx).
    _onnx("GPEN-BFR-512.onnx", "GPEN-BFR-512",
          (_REACTOR + "GPEN-BFR-512.onnx", _FOFR + "facerestore_models/GPEN-BFR-512.onnx"),
          "bf80acb8e91ba8852e3f012505be2c3b6cd6b3eed5ec605e3db87863c4e74d4e", 284_244_491, "ReActor (Gourieff)"),
    # sha256/size: LFS pointer of Gourieff's commit 834d2a8cf8a5dfd8caa2f249ebf101231d867d77 ("Upload
    # GPEN-BFR-1024.onnx"; the commit page is the one of the kp-forks/ReActor copy, which keeps the
    # dataset's history); same pointer in fofr/comfyui (blob at 4281063) and OwlMaster/live_rope ce423d9.
    _onnx("GPEN-BFR-1024.onnx", "GPEN-BFR-1024",
          (_REACTOR + "GPEN-BFR-1024.onnx", _FOFR + "facerestore_models/GPEN-BFR-1024.onnx"),
          "cec8892093d7b99828acde97bf231fb0964d3fb11b43f3b0951e36ef1e192a3e", 285_101_993, "ReActor (Gourieff)"),
    # sha256/size: LFS pointer of Gourieff's commit 8fe1882cb19a5869a78c9a0b20dc1b4b4be739fa ("Upload
    # GPEN-BFR-2048.onnx", same history in kp-forks/ReActor); same pointer in fofr/comfyui commit
    # 70b81bfc02810e1a39688712bb917a5e4136bba4.
    _onnx("GPEN-BFR-2048.onnx", "GPEN-BFR-2048",
          (_REACTOR + "GPEN-BFR-2048.onnx", _FOFR + "facerestore_models/GPEN-BFR-2048.onnx"),
          "d0229ff43f979c360bd19daa9cd0ce893722d59f41a41822b9223ebbe4f89b3e", 285_469_146, "ReActor (Gourieff)"),
    # ---- FaceFusion's ONNX exports (facefusion/models-3.0.0, facefusion-assets models-3.0.0) ----
    # FaceFusion's own LFS pointer pages for these four were not in the searchable index; the values
    # are the LFS pointers of mirrors that carry FaceFusion's files under FaceFusion's names:
    # gpen_bfr_256: DeepFakeApp/model commit e51920405955f0b27c7cfe9c31ae1108b8d4584d and
    #   uwg/modelz_base Extras/ffff_assets (commit 3091ed1), both bad8bf04..., 75,792,988 bytes;
    # gpen_bfr_512: uwg/modelz_base Extras/ffff_assets/gpen_bfr_512.onnx (commit 3091ed1);
    # gpen_bfr_1024: DeepFakeApp/model commit e519204;
    # gpen_bfr_2048: DeepFakeApp/model commit e519204 and uwg/modelz_base ffff_assets (3091ed1).
    # Several public download manifests that name facefusion/models-3.0.0 as their source list the
    # same four hashes and sizes. FaceFusion itself checks these files with CRC32 (.hash files).
    _onnx("gpen_bfr_256.onnx", "GPEN-BFR-256",
          (_FACEFUSION_HF + "gpen_bfr_256.onnx", _FACEFUSION_GH + "gpen_bfr_256.onnx", _UWG_FFFF + "gpen_bfr_256.onnx",
           _DEEPFAKEAPP + "gpen_bfr_256.onnx"),
          "bad8bf0426873828df2dbf4e3b3d9ababba9da7965b8b72426569486f7ae5c25", 75_792_988, "FaceFusion"),
    _onnx("gpen_bfr_512.onnx", "GPEN-BFR-512",
          (_FACEFUSION_HF + "gpen_bfr_512.onnx", _FACEFUSION_GH + "gpen_bfr_512.onnx", _UWG_FFFF + "gpen_bfr_512.onnx"),
          "d5f066b9068a8b74217f9712e28e875a6144629b108a6f7355acbdb3a2832c54", 284_340_240, "FaceFusion"),
    _onnx("gpen_bfr_1024.onnx", "GPEN-BFR-1024",
          (_FACEFUSION_HF + "gpen_bfr_1024.onnx", _FACEFUSION_GH + "gpen_bfr_1024.onnx",
           _DEEPFAKEAPP + "gpen_bfr_1024.onnx"),
          "bcd31aa52110a2005efc96abbab4546d57e42482648f08715b552423d96b381b", 285_203_703, "FaceFusion"),
    _onnx("gpen_bfr_2048.onnx", "GPEN-BFR-2048",
          (_FACEFUSION_HF + "gpen_bfr_2048.onnx", _FACEFUSION_GH + "gpen_bfr_2048.onnx",
           _UWG_FFFF + "gpen_bfr_2048.onnx",
           _DEEPFAKEAPP + "gpen_bfr_2048.onnx"),
          "66d12a637118d71b00f5a290b8dac13c81c1c0326a127a1978799c6e17bb8d1f", 285_582_766, "FaceFusion"),
    # ---- facexlib detector and parser (URLs of facexlib 0.3.0's detection/ and parsing/ __init__) ----
    # sha256/size: LFS pointers of huggingface.co/fofr/comfyui (facedetection/), krnl/
    # detection_Resnet50_Final, salmonrk/facedetection, vdo/hallo2 (all identical).
    WeightsFile("detection_Resnet50_Final.pth", DETECTION,
                (_FACEXLIB + "v0.1.0/detection_Resnet50_Final.pth", _HF_FACEDETECTION + "detection_Resnet50_Final.pth"),
                sha256="6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d", size=109_497_761,
                origin="facexlib"),
    # sha256/size: LFS pointers of huggingface.co/chaowenguo/pal (commit ca84b18) and fofr/comfyui.
    WeightsFile("detection_mobilenet0.25_Final.pth", DETECTION,
                (_FACEXLIB + "v0.1.0/detection_mobilenet0.25_Final.pth",
                 _HF_FACEDETECTION + "detection_mobilenet0.25_Final.pth"),
                sha256="2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220", size=1_789_735,
                origin="facexlib"),
    # sha256/size: LFS pointers of huggingface.co/fofr/comfyui (facedetection/), salmonrk/
    # facedetection, yutaakiyama/inswapper_128.onnx (commit 40bd523) (all identical).
    WeightsFile("parsing_parsenet.pth", DETECTION,
                (_FACEXLIB + "v0.2.2/parsing_parsenet.pth", _HF_FACEDETECTION + "parsing_parsenet.pth"),
                sha256="3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2", size=85_331_193,
                origin="facexlib"),
    # sha256/size: LFS pointer of huggingface.co/ddrfan/FaceXLib (commit 407f696); same sha256 in
    # wei112/ziyong and wiikoo's ComfyUI models backup. No Hugging Face fallback URL recorded.
    WeightsFile("parsing_bisenet.pth", DETECTION, (_FACEXLIB + "v0.2.0/parsing_bisenet.pth",),
                sha256="468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567", size=53_289_463,
                origin="facexlib"),
    # ---- XSeg occluders (FaceFusion's models-3.1.0 / models-3.2.0 releases) ---------------------
    # No LFS pointer of huggingface.co/facefusion/models-3.1.0 or -3.2.0 (or of a mirror) was found with
    # the code search. sha256/size: the same values in the model manifests of several public projects
    # (five or more files per value, code search 2026; one records them as taken from
    # huggingface.co/facefusion/models-3.1.0, one as checked against FaceFusion's published CRC32
    # f207afe3 for xseg_1). Second-hand: a mismatch is reported with the expected values.
    WeightsFile("xseg_1.onnx", DETECTION, _facefusion("models-3.1.0", "xseg_1.onnx"),
                sha256="c4d1498b8a03b5fe2a3a5d2ef2a0402ab03bd51edaf5b2d8d5fb764702a97dd3", size=70_324_286,
                origin="FaceFusion (DeepFaceLab XSeg, GPL-3.0)"),
    WeightsFile("xseg_2.onnx", DETECTION, _facefusion("models-3.1.0", "xseg_2.onnx"),
                sha256="cd9a0879eaf43841d765472cf1f8c330dbf9dcb03da0eace93e95f3bcc399042", size=70_324_286,
                origin="FaceFusion (DeepFaceLab XSeg, GPL-3.0)"),
    WeightsFile("xseg_3.onnx", DETECTION, _facefusion("models-3.2.0", "xseg_3.onnx"),
                sha256="48ccd7e8541e159a5a754ec9e62df2f12065f7df8f9af842c1750342c6533559", size=70_327_709,
                origin="FaceFusion (DeepFaceLab XSeg, GPL-3.0)"),
)

REGISTRY: dict[str, WeightsFile] = {f.name: f for f in _FILES}
"""Every known file by name."""


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


def gpen_files(onnx: bool | None = None) -> list[WeightsFile]:
    """The GPEN entries (``.pth`` and ``.onnx``; only one kind when ``onnx`` is True/False), in registry order."""
    return [f for f in REGISTRY.values() if f.model is not None and (onnx is None or f.is_onnx == onnx)]
