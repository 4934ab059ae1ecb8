"""``GPENFaceRestore``: restores the faces of an IMAGE batch with a loaded GPEN model.

The node only translates: widgets to ``gpen.FaceRestorer`` arguments, ComfyUI's device, memory,
progress and interrupt services to the core's hooks, and the core's result to ComfyUI outputs.
The core restores faces in chunks, checks ``check_interrupt`` before each chunk and halves the
chunk on an out-of-memory error (down to one face; ComfyUI's ``is_oom`` says what counts), so none
of that is repeated here. Where the networks live is ComfyUI's memory manager's business
(``nodes/memory.py``): the core hands each network to it right before it runs.
"""

from __future__ import annotations

import logging

import comfy.utils
import torch
from comfy import model_management
from comfy_api.latest import io

from ..gpen import FaceRestorer
from ..gpen.faces.detect import RETINAFACE_MODELS
from ..gpen.errors import InvalidInputError
from ..gpen.faces.align import TEMPLATES
from ..gpen.faces.selection import SORT_ORDERS
from ..gpen.memory import default_frames_per_chunk, face_memory_bytes
from . import memory
from .folders import DETECTION_MODELS, folders_of
from .model_loader import GPENModel, GPENModelType
from .preview import ui_payload

logger = logging.getLogger(__name__)

FACE_MODES = ("detect", "aligned")
DETECTORS = tuple(RETINAFACE_MODELS)
SELECTIONS = ("all", "largest", "by index")

# Faces per network pass for which ComfyUI is asked to make room when the batch size is automatic.
_FACES_TO_MAKE_ROOM_FOR = 4


class GPENFaceRestore(io.ComfyNode):
    """Finds, aligns, restores and pastes back faces (or restores already aligned face crops)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="GPENFaceRestore",
            display_name="GPEN Face Restore",
            category="image/restoration",
            description="Restores faces with GPEN. detect: finds faces (RetinaFace), aligns each to the "
                        "GPEN template, restores it and blends it back with a feathered mask. aligned: "
                        "every frame already is an aligned face crop (e.g. from another face node) and is "
                        "restored as a whole. Works on batches (video frames) in chunks.",
            inputs=[
                io.Image.Input("image", tooltip="Image or batch of frames (video) to restore."),
                GPENModelType.Input("gpen_model", tooltip="Model from 'Load GPEN Model'."),
                io.Combo.Input("face_mode", options=list(FACE_MODES), default="detect",
                               tooltip="detect: find and align faces in the image. aligned: each frame is "
                                       "already an aligned face crop; it is resized to the model size, "
                                       "restored and resized back."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Mix of restored and original face: 1 = fully restored, 0 = unchanged."),
                io.Combo.Input("template", options=list(TEMPLATES), default="gpen", optional=True,
                               tooltip="Alignment template (detect mode). gpen: the one GPEN was trained "
                                       "with; ffhq: the FFHQ template GFPGAN/CodeFormer/ReActor use."),
                io.Combo.Input("detector", options=list(DETECTORS), default="retinaface_resnet50", optional=True,
                               tooltip="Face detector (detect mode). Weights come from models/facedetection "
                                       "(detection_Resnet50_Final.pth or detection_mobilenet0.25_Final.pth, "
                                       "downloaded on first use when possible)."),
                io.Float.Input("detection_threshold", default=0.5, min=0.05, max=0.99, step=0.01, optional=True,
                               tooltip="Minimum detector confidence for a face (detect mode)."),
                io.Combo.Input("face_selection", options=list(SELECTIONS), default="all", optional=True,
                               tooltip="Which detected faces to restore: all, only the largest, or the "
                                       "ones listed in face_indices."),
                io.String.Input("face_indices", default="0", optional=True,
                                tooltip="With face_selection 'by index': comma-separated face numbers "
                                        "(0 = first face in sort order), e.g. 0,2."),
                io.Combo.Input("sort_faces", options=list(SORT_ORDERS), default="left-to-right", optional=True,
                               tooltip="Order in which faces are numbered for face_indices: by position, by "
                                       "size, or by detector confidence (score)."),
                io.Int.Input("min_face_size", default=0, min=0, max=4096, step=1, optional=True,
                             tooltip="Ignore faces whose box is smaller than this many pixels (0: keep all)."),
                io.Boolean.Input("face_parsing", default=False, optional=True,
                                 tooltip="Blend along the face outline found by a face-parsing network "
                                         "(parsing_parsenet.pth in models/facedetection) instead of a "
                                         "feathered square."),
                io.Boolean.Input("color_correction", default=False, optional=True,
                                 tooltip="Match the colours of each restored face to the original face."),
                io.Float.Input("temporal_smoothing", default=0.0, min=0.0, max=0.95, step=0.05, optional=True,
                               tooltip="For video batches: smooth face positions over frames to stop jitter "
                                       "(0: off; higher: steadier but slower to follow motion)."),
                io.Int.Input("face_batch_size", default=0, min=0, max=256, step=1, optional=True,
                             tooltip="Faces per network pass (0: automatic, from free GPU memory). Halved "
                                     "automatically when the GPU runs out of memory."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Only faces inside this mask are restored, and only within it "
                                      "(detect mode). One mask or one per frame."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The restored image batch."),
                io.Mask.Output(display_name="mask", tooltip="Where restored faces were blended in (0..1)."),
                io.Image.Output(display_name="face_crops",
                                tooltip="Restored face crops at the model size, one per face (a single black "
                                        "crop when no face was found)."),
                io.String.Output(display_name="info", tooltip="Faces found per frame and what was done."),
            ],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, gpen_model: GPENModel, face_mode: str, strength: float,
                template: str = "gpen", detector: str = "retinaface_resnet50", detection_threshold: float = 0.5,
                face_selection: str = "all", face_indices: str = "0", sort_faces: str = "left-to-right",
                min_face_size: int = 0, face_parsing: bool = False, color_correction: bool = False,
                temporal_smoothing: float = 0.0, face_batch_size: int = 0,
                mask: torch.Tensor | None = None) -> io.NodeOutput:
        if not isinstance(gpen_model, GPENModel):
            raise InvalidInputError("gpen_model must come from a 'Load GPEN Model' node.")
        if face_mode not in FACE_MODES:
            raise InvalidInputError(f"face_mode must be one of {', '.join(FACE_MODES)}, got {face_mode!r}.")

        device = model_management.get_torch_device()
        net = gpen_model.model
        chunk = face_batch_size if face_batch_size > 0 else None
        frames_on_device = min(image.shape[0], default_frames_per_chunk(image.shape[1], image.shape[2]))
        work = (face_memory_bytes(gpen_model.size, gpen_model.dtype) * (chunk or _FACES_TO_MAKE_ROOM_FOR)
                + frames_on_device * image[0].nelement() * 4 * 4)  # frames + working copies
        place = memory.HostPlacement(gpen_model.patcher, gpen_model.size, gpen_model.dtype, device)
        if gpen_model.patcher is not None:  # room for GPEN, its faces and the frames before anything runs
            memory.load(gpen_model.patcher, work)
        else:
            model_management.free_memory(work, device)
        pbar = comfy.utils.ProgressBar(max(1, image.shape[0]))
        hooks = dict(progress=lambda done, total: pbar.update_absolute(done, total),
                     check_interrupt=model_management.throw_exception_if_processing_interrupted)

        restorer = _restorer_for(net, device)
        restorer.place, restorer.is_oom = place, memory.host_is_oom() or restorer.is_oom
        if face_mode == "aligned":
            result = restorer.restore_aligned(image, strength=strength, chunk_size=chunk, **hooks)
        else:
            result = restorer.restore(
                image, strength=strength, template=template, detector=detector,
                detection_threshold=detection_threshold,
                face_selection=face_indices if face_selection == "by index" else face_selection,
                sort=sort_faces, min_face_size=min_face_size, mask=_mask_batch(mask), parsing=face_parsing,
                color_correction=color_correction, temporal_smoothing=temporal_smoothing, chunk_size=chunk,
                detector_dirs=tuple(folders_of(DETECTION_MODELS)), **hooks)

        out_device = model_management.intermediate_device()
        images = result.images.to(out_device, torch.float32)
        masks = result.masks.to(out_device, torch.float32)
        crops = _crops_or_placeholder(result.crops, gpen_model.size).to(out_device, torch.float32)
        counts = list(result.faces_per_image)
        first = next((i for i, n in enumerate(counts) if n > 0), 0)
        payload = ui_payload(image, images, counts, face_mode, frame=first)
        return io.NodeOutput(images, masks, crops, result.info, ui=payload)


_last_restorer: tuple[torch.nn.Module, str, FaceRestorer] | None = None


def _restorer_for(net: torch.nn.Module, device: torch.device) -> FaceRestorer:
    """The ``FaceRestorer`` of the last run when model and device are the same (it keeps the face
    detector and parser, and with them their patchers), else a new one."""
    global _last_restorer
    if _last_restorer is not None and _last_restorer[0] is net and _last_restorer[1] == str(device):
        return _last_restorer[2]
    restorer = FaceRestorer(net, device=device)
    _last_restorer = (net, str(device), restorer)
    return restorer


def _mask_batch(mask: torch.Tensor | None) -> torch.Tensor | None:
    """ComfyUI masks are (B, H, W), or (H, W) from some nodes: the core takes (B, H, W)."""
    if mask is not None and mask.ndim == 2:
        return mask[None]
    return mask


def _crops_or_placeholder(crops: torch.Tensor, size: int) -> torch.Tensor:
    """Crops as ComfyUI IMAGE (N, S, S, 3); one black crop stands in for "no face" (an empty
    IMAGE batch breaks most downstream nodes)."""
    if crops.shape[0] == 0:
        return torch.zeros(1, size, size, 3)
    return crops
