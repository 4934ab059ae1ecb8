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
from ..gpen.faces.mesh import faces_from_landmarks
from ..gpen.faces.networks import NetworkCache
from ..gpen.errors import InvalidInputError
from ..gpen.faces.align import TEMPLATES
from ..gpen.faces.occlusion import OCCLUSION_CHOICES, parse_occluders
from ..gpen.faces.parsing import DEFAULT_REGIONS, REGIONS, parse_regions
from ..gpen.faces.reference import REFERENCE_THRESHOLD
from ..gpen.faces.selection import SORT_ORDERS, parse_indices
from ..gpen.pipeline.frames import MAX_SCALE, check_scale
from ..gpen.pipeline.memory import plan_memory
from ..gpen.pipeline.options import check_options
from . import memory
from .folders import DETECTION_MODELS, folders_of
from .landmarks import face_landmarks_inputs
from .model_loader import GPENModel, GPENModelType
from .outputs import output_wanted, used_in_running_prompt
from .preview import ui_payload
from .schema import ADVANCED

logger = logging.getLogger(__name__)

FACE_MODES = ("detect", "aligned")
DETECTORS = tuple(RETINAFACE_MODELS)
SELECTIONS = ("all", "largest", "by index")
DEFAULT_REGIONS_TEXT = ",".join(DEFAULT_REGIONS)

CROPS_OUTPUT = 2  # index of the face_crops output

# The face detectors and the parser, shared by every restore node whatever its GPEN model (they hold
# no reference to one): switching models never rebuilds them, and no dropped model is kept alive.
# Their ComfyUI patchers live as long as they do (nodes/memory.py).
_NETWORKS = NetworkCache()
# node id -> whether face_crops was taken in the prompt ComfyUI ran when it fingerprinted the node
_crops_fingerprint: dict[str, bool | None] = {}


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
                        "restored as a whole. Works on batches (video frames) in chunks. Optional: keep "
                        "chosen face-parsing regions or what covers a face (occlusion) original, and output "
                        "a picture up to 4x larger (upscale).",
            inputs=[
                io.Image.Input("image", tooltip="Image or batch of frames (video) to restore."),
                GPENModelType.Input("gpen_model", tooltip="Model from 'Load GPEN Model'."),
                io.Combo.Input("face_mode", options=list(FACE_MODES), default="detect",
                               tooltip="detect: find and align faces in the image. aligned: each frame is "
                                       "already an aligned face crop; it is resized to the model size, "
                                       "restored and resized back.", **ADVANCED),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Mix of restored and original face: 1 = fully restored, 0 = unchanged."),
                io.Combo.Input("template", options=list(TEMPLATES), default="gpen", optional=True,
                               tooltip="Alignment template (detect mode). gpen: the one GPEN was trained "
                                       "with; ffhq: the FFHQ template GFPGAN/CodeFormer/ReActor use.", **ADVANCED),
                io.Combo.Input("detector", options=list(DETECTORS), default="retinaface_resnet50", optional=True,
                               tooltip="Face detector (detect mode). Weights come from models/facedetection "
                                       "(detection_Resnet50_Final.pth or detection_mobilenet0.25_Final.pth, "
                                       "downloaded on first use when possible).", **ADVANCED),
                io.Float.Input("detection_threshold", default=0.5, min=0.05, max=0.99, step=0.01, optional=True,
                               tooltip="Minimum detector confidence for a face (detect mode)."),
                io.Combo.Input("face_selection", options=list(SELECTIONS), default="all", optional=True,
                               tooltip="Which detected faces to restore: all, only the largest, or the "
                                       "ones listed in face_indices."),
                io.String.Input("face_indices", default="0", optional=True,
                                tooltip="With face_selection 'by index': comma-separated face numbers "
                                        "(0 = first face in sort order), e.g. 0,2. With track_faces the "
                                        "numbers are people: numbered in sort order on the frame where each "
                                        "first appears."),
                io.Combo.Input("sort_faces", options=list(SORT_ORDERS), default="left-to-right", optional=True,
                               tooltip="Order in which faces are numbered for face_indices: by position, by "
                                       "size, or by detector confidence (score).", **ADVANCED),
                io.Int.Input("min_face_size", default=0, min=0, max=4096, step=1, optional=True,
                             tooltip="Ignore faces whose box is smaller than this many pixels (0: keep all).",
                             **ADVANCED),
                io.Boolean.Input("face_parsing", default=False, optional=True,
                                 tooltip="Blend along the face outline found by a face-parsing network "
                                         "(parsing_parsenet.pth in models/facedetection) instead of a "
                                         "feathered square."),
                io.Boolean.Input("color_correction", default=False, optional=True,
                                 tooltip="Match the colours of each restored face to the original face."),
                io.Float.Input("temporal_smoothing", default=0.0, min=0.0, max=0.95, step=0.05, optional=True,
                               tooltip="For video batches: smooth face positions over frames to stop jitter "
                                       "(0: off; higher: steadier but slower to follow motion).", **ADVANCED),
                io.Int.Input("face_batch_size", default=0, min=0, max=256, step=1, optional=True,
                             tooltip="Faces per network pass (0: automatic: from free GPU memory, or on the CPU "
                                     "the measured best for the model size and processor). Halved automatically when "
                                     "the GPU runs out of memory.", **ADVANCED),
                io.Mask.Input("mask", optional=True,
                              tooltip="Only faces inside this mask are restored, and only within it "
                                      "(detect mode). One mask or one per frame; a mask of another size "
                                      "is resized to the image."),
                io.Image.Input("reference", optional=True,
                               tooltip="The picture before the face swap (e.g. the image that goes into "
                                       "ReActor; one frame or one per frame, same size as image). Only "
                                       "faces that differ from it are restored, so faces that were never "
                                       "swapped stay untouched (detect mode)."),
                io.Float.Input("reference_threshold", default=REFERENCE_THRESHOLD, min=0.0, max=1.0, step=0.005,
                               optional=True,
                               tooltip="With a reference: how much a face must differ from it to count as "
                                       "swapped (mean absolute difference over the face, 0..1). The default "
                                       "sits between JPEG noise (at most 0.0115) and face swaps (0.046 and "
                                       "more), measured on real faces.", **ADVANCED),
                io.Boolean.Input("track_faces", default=True, optional=True,
                                 tooltip="For batches of 3 or more frames (on: automatic, off: every picture "
                                         "on its own). The batch is first split into shots where the picture "
                                         "cuts (unrelated pictures are one-frame shots, restored exactly as "
                                         "found). Inside a shot each face is followed from frame to frame, so "
                                         "face_indices and 'largest' pick the same person in every frame; a "
                                         "face the detector misses for up to max_gap frames is restored at "
                                         "interpolated places only where the frame shows it; a face seen in "
                                         "fewer than min_track frames is dropped only at a detector score "
                                         "below 0.9; given landmarks are never dropped.", **ADVANCED),
                io.Int.Input("max_gap", default=3, min=0, max=64, step=1, optional=True,
                             tooltip="With track_faces: a face missing from up to this many frames in a row "
                                     "keeps its track and is restored there at landmarks interpolated from "
                                     "its neighbours.", **ADVANCED),
                io.Int.Input("min_track", default=2, min=1, max=64, step=1, optional=True,
                             tooltip="With track_faces: inside a shot of 3 or more frames, a face found in fewer "
                                     "frames than this is dropped as a false detection when its detector score is "
                                     "below 0.9 (1: keep all).", **ADVANCED),
                io.String.Input("regions", default=DEFAULT_REGIONS_TEXT, optional=True,
                                tooltip="With face_parsing: comma-separated regions taken from the restored "
                                        f"face; the others stay original. Regions: {', '.join(REGIONS)}. "
                                        "'teeth' is the parsers' inner-mouth class, the same pixels as "
                                        "'mouth': to keep the original teeth leave out both.", **ADVANCED),
                io.Combo.Input("occlusion", options=list(OCCLUSION_CHOICES), default="none", optional=True,
                               tooltip="Keep what covers a face (hands, microphones, hair) with FaceFusion's "
                                       "XSeg occluder (DeepFaceLab, GPL-3.0): xseg_1/2/3.onnx in "
                                       "models/facedetection, downloaded on first use; needs onnxruntime. "
                                       "all: the minimum of the three (detect mode).", **ADVANCED),
                io.Int.Input("upscale", default=1, min=1, max=MAX_SCALE, step=1, optional=True,
                             tooltip="Output this many times larger. The background is resized (bicubic) or "
                                     "made by upscale_model; each face is restored from the original and "
                                     "pasted at the output size, so 1024/2048 models keep more of their detail."),
                io.UpscaleModel.Input("upscale_model", optional=True,
                                      tooltip="Optional model from core's 'Load Upscale Model' for the background "
                                              "(detect mode); its output is resized to exactly upscale x."),
                *face_landmarks_inputs(),  # ComfyUI 0.33.0+: faces from core's MediaPipe Face Landmarker
                io.Float.Input("temporal_consistency", default=0.0, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="For video batches (with track_faces): hold restored faces still where the "
                                       "face holds still. Each restored face is blended with the same face in the "
                                       "2 frames either side wherever the input did not change there, so grain "
                                       "and skin texture stop flickering; expression changes, turns, light "
                                       "changes and cuts are not blended (0: off; 1: strongest).", **ADVANCED),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The restored image batch."),
                io.Mask.Output(display_name="mask", tooltip="Where restored faces were blended in (0..1), at "
                                                            "the output size."),
                io.Image.Output(display_name="face_crops",
                                tooltip="Restored face crops at the model size, one per face (a single black "
                                        "crop when no face was found). Kept only when a node takes this "
                                        "output."),
                io.String.Output(display_name="info", tooltip="Faces found per frame and what was done."),
            ],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt, io.Hidden.dynprompt],
        )

    @classmethod
    def fingerprint_inputs(cls, **inputs):
        """Whether ``face_crops`` is taken in the running workflow is part of the cache key: connecting
        it later re-runs the node (the crops are only kept when taken; see ``nodes/outputs.py``)."""
        uid = getattr(cls.hidden, "unique_id", None)
        used = used_in_running_prompt(uid, "GPENFaceRestore", CROPS_OUTPUT)
        _crops_fingerprint[str(uid)] = used
        return ("face_crops taken", used)

    @classmethod
    def execute(cls, image: torch.Tensor, gpen_model: GPENModel, face_mode: str, strength: float,
                template: str = "gpen", detector: str = "retinaface_resnet50", detection_threshold: float = 0.5,
                face_selection: str = "all", face_indices: str = "0", sort_faces: str = "left-to-right",
                min_face_size: int = 0, face_parsing: bool = False, color_correction: bool = False,
                temporal_smoothing: float = 0.0, face_batch_size: int = 0,
                mask: torch.Tensor | None = None, reference: torch.Tensor | None = None,
                reference_threshold: float = REFERENCE_THRESHOLD, track_faces: bool = True, max_gap: int = 3,
                min_track: int = 2, regions: str = DEFAULT_REGIONS_TEXT, occlusion: str = "none", upscale: int = 1,
                upscale_model=None, face_landmarks=None, temporal_consistency: float = 0.0) -> io.NodeOutput:
        if not isinstance(gpen_model, GPENModel):
            raise InvalidInputError("gpen_model must come from a 'Load GPEN Model' node.")
        if face_mode not in FACE_MODES:
            raise InvalidInputError(f"face_mode must be one of {', '.join(FACE_MODES)}, got {face_mode!r}.")
        if face_selection not in SELECTIONS:
            raise InvalidInputError(f"face_selection must be one of {', '.join(SELECTIONS)}, got {face_selection!r}.")
        # Every option is checked before memory is freed, models move or the detector runs.
        selection = parse_indices(face_indices) if face_selection == "by index" else face_selection
        options = dict(template=template, detection_threshold=detection_threshold, face_selection=selection,
                       sort=sort_faces, min_face_size=min_face_size, temporal_smoothing=temporal_smoothing,
                       reference_threshold=reference_threshold, track_faces=None if track_faces else False,
                       max_gap=max_gap, min_track=min_track, temporal_consistency=temporal_consistency)
        check_options(strength=strength, **options)
        if temporal_consistency and face_mode != "detect":
            raise InvalidInputError("temporal_consistency follows faces along their tracks (detect mode); aligned "
                                    "crops have none: set it to 0 or face_mode to detect.")
        upscale = check_scale(upscale)
        regions_arg = _regions(regions, face_parsing)
        parse_occluders(occlusion)
        if face_landmarks is not None and face_mode != "detect":
            raise InvalidInputError("face_landmarks place faces in the image: set face_mode to detect, or disconnect "
                                    "face_landmarks to restore aligned face crops.")
        given = None if face_landmarks is None else faces_from_landmarks(face_landmarks, *image.shape[:3])
        if image.shape[0] == 0:  # an empty batch passes through
            b, h, w, c = image.shape
            return io.NodeOutput(image.new_zeros((0, h * upscale, w * upscale, c)),
                                 torch.zeros((0, h * upscale, w * upscale)),
                                 _crops_or_placeholder(image[:0], gpen_model.size), "empty image batch; nothing to restore")

        device = model_management.get_torch_device()
        net = gpen_model.model
        chunk = face_batch_size if face_batch_size > 0 else None
        plan = plan_memory(image.shape[0], image.shape[1], image.shape[2], channels=image.shape[3],
                           size=gpen_model.size, dtype=gpen_model.dtype, faces_per_call=chunk, upscale=upscale,
                           detector=detector if face_mode == "detect" and given is None else None)
        if gpen_model.patcher is not None:  # room for GPEN, the detector and the frames before anything runs
            memory.load(gpen_model.patcher, plan.work)
        else:  # a graph onnxruntime runs (or a network without a patcher): ComfyUI can only make room
            weights = model_management.module_size(net) if isinstance(net, torch.nn.Module) else 0
            model_management.free_memory(weights + plan.work, device)
        pbar = comfy.utils.ProgressBar(max(1, image.shape[0]))
        hooks = dict(progress=lambda done, total: pbar.update_absolute(done, total),
                     check_interrupt=model_management.throw_exception_if_processing_interrupted)

        keep_crops = "restored" if output_wanted(cls.hidden, CROPS_OUTPUT, _crops_fingerprint) else "none"
        if keep_crops == "none":
            logger.debug("face_crops is not taken by any node: the restored crops are not kept")
        # ComfyUI's memory manager places every network right before it runs (nodes/memory.py).
        place = memory.HostPlacement(gpen_model.patcher, gpen_model.size, gpen_model.dtype, device)
        restorer = FaceRestorer(net, device=device, networks=_NETWORKS, place=place, is_oom=memory.host_is_oom())
        if face_mode == "aligned":
            result = restorer.restore_aligned(image, strength=strength, chunk_size=chunk, upscale=upscale,
                                              keep_crops=keep_crops, **hooks)
        else:
            result = restorer.restore(
                image, given, strength=strength, detector=detector, mask=_mask_batch(mask), parsing=face_parsing,
                color_correction=color_correction, chunk_size=chunk, reference=reference,
                detector_dirs=tuple(folders_of(DETECTION_MODELS)), regions=regions_arg, occlusion=occlusion,
                upscale=upscale, upscaler=None if upscale_model is None else _host_upscaler(upscale_model),
                keep_crops=keep_crops, **options, **hooks)

        out_device = model_management.intermediate_device()
        images = result.images.to(out_device, torch.float32)
        masks = result.masks.to(out_device, torch.float32)
        crops = _crops_or_placeholder(result.crops, gpen_model.size).to(out_device, torch.float32)
        counts = list(result.faces_per_image)
        first = next((i for i, n in enumerate(counts) if n > 0), 0)
        payload = ui_payload(image, images, counts, face_mode, frame=first)
        return io.NodeOutput(images, masks, crops, result.info, ui=payload)


def _regions(regions: str, face_parsing: bool) -> str | None:
    """The regions for the core (checked here, before anything runs): with face_parsing as given;
    without it None, as long as the widget holds the default set (else the user is told)."""
    chosen = parse_regions(regions)
    if face_parsing:
        return regions
    if set(chosen) != set(DEFAULT_REGIONS):
        raise InvalidInputError(f"regions choose face-parsing classes: turn face parsing (face_parsing) on, or set "
                                f"regions back to {DEFAULT_REGIONS_TEXT}.")
    return None


def _host_upscaler(upscale_model):
    """Frames (F, H, W, 3) -> larger frames through core's 'Upscale Image (using Model)' node, so the
    host's own tiling, device placement and out-of-memory back-off apply."""
    from comfy_extras.nodes_upscale_model import ImageUpscaleWithModel

    def upscale(frames: torch.Tensor) -> torch.Tensor:
        return ImageUpscaleWithModel.execute(upscale_model, frames)[0]

    return upscale


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
