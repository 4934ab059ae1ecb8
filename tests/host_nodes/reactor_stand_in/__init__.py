"""Test-only stand-in for ComfyUI-ReActor's ``ReActorFaceSwap`` node (never part of the pack).

ReActor itself cannot be installed on the test machines (insightface and its models need the
network), but one example workflow chains it before GPEN. This pack declares the node with the
inputs and outputs ReActor publishes (its ``nodes.py``: names, order, types, defaults, ranges),
so the host and the real frontend can check that workflow's ReActor node like any other; its
combo lists hold what a fresh ReActor install offers. The tests link it into ``custom_nodes`` as
``comfyui-reactor`` (ReActor's registry name). Running it only passes the image through.
"""

from __future__ import annotations

import folder_paths

DETECTORS = ["retinaface_resnet50", "retinaface_mobile0.25", "YOLOv5l", "YOLOv5n"]
GENDERS = ["no", "female", "male"]


class ReActorFaceSwap:
    @classmethod
    def INPUT_TYPES(cls):
        restorers = ["none", *folder_paths.get_filename_list("facerestore_models")]
        return {
            "required": {
                "enabled": ("BOOLEAN", {"default": True, "label_off": "OFF", "label_on": "ON"}),
                "input_image": ("IMAGE",),
                "swap_model": (["inswapper_128.onnx"],),
                "facedetection": (DETECTORS,),
                "face_restore_model": (restorers,),
                "face_restore_visibility": ("FLOAT", {"default": 1, "min": 0.1, "max": 1, "step": 0.05}),
                "codeformer_weight": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1, "step": 0.05}),
                "detect_gender_input": (GENDERS, {"default": "no"}),
                "detect_gender_source": (GENDERS, {"default": "no"}),
                "input_faces_index": ("STRING", {"default": "0"}),
                "source_faces_index": ("STRING", {"default": "0"}),
                "console_log_level": ([0, 1, 2], {"default": 1}),
            },
            "optional": {
                "source_image": ("IMAGE",),
                "face_model": ("FACE_MODEL",),
                "face_boost": ("FACE_BOOST",),
            },
        }

    RETURN_TYPES = ("IMAGE", "FACE_MODEL", "IMAGE")
    RETURN_NAMES = ("SWAPPED_IMAGE", "FACE_MODEL", "ORIGINAL_IMAGE")
    FUNCTION = "execute"
    CATEGORY = "🌌 ReActor"

    def execute(self, enabled, input_image, **_):
        return (input_image, None, input_image)


NODE_CLASS_MAPPINGS = {"ReActorFaceSwap": ReActorFaceSwap}
NODE_DISPLAY_NAME_MAPPINGS = {"ReActorFaceSwap": "ReActor 🌌 Fast Face Swap"}  # ReActor's own title
