"""Write the model files each example workflow needs into it: ``python docs/make_template_models.py``.

ComfyUI's frontend reads two places when a workflow is opened, and offers the files that are
missing for download (the 0.33.0 frontend, 1.49: "Missing Models" in the errors panel, with a
Download button for Hugging Face and Civitai URLs; the 0.8.0 frontend, 1.35: the "Missing Models"
dialog, which lists them with their URL):

- ``properties.models`` of a node: ``[{"name", "url", "directory", "hash", "hash_type"}]``; an entry
  counts when a widget of that node holds ``name`` (here: the checkpoint of "Load GPEN Model");
- ``models`` at the workflow's top level: files no widget names (here: the face detector's
  weights, which the restore node fetches on first use when it can; not listed when the restore
  node takes its faces from a linked ``face_landmarks`` input, which replaces the detector).

Names, URLs, folders and hashes come from the pack's weights registry (``gpen.weights.registry.REGISTRY``),
Hugging Face mirrors first where the registry has one (the frontend only offers downloads from
there). Core's MediaPipe face model (ComfyUI 0.33.0's "Load Face Detection Model (MediaPipe)",
``LoadMediaPipeFaceLandmarker``) is not the pack's file: its record, :data:`MEDIAPIPE_FACE_MODEL`,
is the one ComfyUI 0.33.0 gives it itself. tests/test_templates.py fails when a template disagrees
with this.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "example_workflows"
MEDIAPIPE_LOADER = "LoadMediaPipeFaceLandmarker"
MEDIAPIPE_FACE_MODEL = {
    "name": "mediapipe_face_fp32.safetensors",
    "url": "https://huggingface.co/Comfy-Org/mediapipe/resolve/main/detection/mediapipe_face_fp32.safetensors",
    "directory": "detection",
}
"""As ComfyUI 0.33.0 records it in its own blueprint ``blueprints/Image Face Detection (Mediapipe).json``
(``properties.models`` of its ``LoadMediaPipeFaceLandmarker`` node; the same in ``Video Face Detection
(Mediapipe).json``); the host publishes no hash for it. The loader lists ``models/detection``."""


def _registry():
    sys.path.insert(0, str(REPO))
    from gpen.faces.detect import RETINAFACE_MODELS
    from gpen.weights.registry import REGISTRY

    return REGISTRY, RETINAFACE_MODELS


def model_entry(file_name: str) -> dict | None:
    """The frontend's model record for a registry file (None when the registry does not know it)."""
    registry, _ = _registry()
    spec = registry.get(file_name)
    if spec is None:
        return None
    url = next((u for u in spec.urls if u.startswith("https://huggingface.co/")), spec.urls[0])
    entry = {"name": spec.name, "url": url, "directory": spec.kind}
    if spec.sha256 and spec.hashed(url):
        entry.update(hash=spec.sha256, hash_type="sha256")
    return entry


def expected_models(workflow: dict) -> tuple[dict[int, list[dict]], list[dict]]:
    """(node id -> its ``properties.models``, top-level ``models``) that ``workflow`` should carry."""
    _, detectors = _registry()
    per_node: dict[int, list[dict]] = {}
    top: list[dict] = []
    for node in workflow["nodes"]:
        values = node.get("widgets_values") or []
        if node["type"] == "GPENModelLoader" and values:
            entry = model_entry(values[0])
            per_node[node["id"]] = [entry] if entry else []
        elif node["type"] == MEDIAPIPE_LOADER and values:
            per_node[node["id"]] = [dict(MEDIAPIPE_FACE_MODEL)] if values[0] == MEDIAPIPE_FACE_MODEL["name"] else []
        elif node["type"] == "GPENFaceRestore" and not landmarks_linked(node):
            for name in (v for v in values if isinstance(v, str) and v in detectors):
                entry = model_entry(detectors[name][1])
                if entry and entry not in top:
                    top.append(entry)
    return per_node, top


def landmarks_linked(node: dict) -> bool:
    """Whether a restore node takes its faces from a linked ``face_landmarks`` input (no detector runs)."""
    return any(i.get("name") == "face_landmarks" and i.get("link") is not None for i in node.get("inputs", []))


def apply(workflow: dict) -> dict:
    """``workflow`` with its model records rewritten (a new dict; nothing else changes)."""
    out = json.loads(json.dumps(workflow))
    per_node, top = expected_models(out)
    for node in out["nodes"]:
        if node["id"] in per_node:
            node.setdefault("properties", {})["models"] = per_node[node["id"]]
    if top:
        out["models"] = top
    else:
        out.pop("models", None)
    return out


def main() -> None:
    for path in sorted(TEMPLATES.glob("*.json")):
        workflow = json.loads(path.read_text())
        updated = apply(workflow)
        if updated != workflow:
            path.write_text(json.dumps(updated, indent=2) + "\n")
            print("updated", path.relative_to(REPO))


if __name__ == "__main__":
    main()
