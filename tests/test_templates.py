"""What every example workflow carries, checked without a host: its thumbnail, its model files
(in the form ComfyUI's frontend reads, consistent with the weights registry) and a valid
``requires_nodes`` declaration. The host and browser tests load and run the templates."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((REPO / "example_workflows").glob("*.json"))
CORE_MEDIAPIPE_NODES = ("LoadMediaPipeFaceLandmarker", "MediaPipeFaceLandmarker")
"""Core nodes of ComfyUI 0.33.0 that 0.8.0 lacks (tests/test_comfyui_host.py checks templates against both)."""


def _tool():
    spec = importlib.util.spec_from_file_location("make_template_models", REPO / "docs" / "make_template_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_template_has_a_thumbnail(template):
    thumb = template.with_suffix(".jpg")
    assert thumb.is_file(), f"{thumb.name} missing: run python docs/screenshots.py"
    with Image.open(thumb) as img:
        assert img.format == "JPEG" and img.size == (640, 480)
        assert np.unique(np.asarray(img.convert("L").resize((32, 24)))).size > 20  # a picture, not a blank
    assert thumb.stat().st_size < 200_000


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_template_carries_its_model_files(template):
    from gpen.weights.registry import REGISTRY

    tool = _tool()
    workflow = json.loads(template.read_text())
    assert tool.apply(workflow) == workflow, "run python docs/make_template_models.py"
    loaders = [n for n in workflow["nodes"] if n["type"] == "GPENModelLoader"]
    assert loaders
    for node in loaders:
        (entry,) = node["properties"]["models"]
        assert entry["name"] == node["widgets_values"][0]  # what the frontend matches against the widget
        spec = REGISTRY[entry["name"]]
        assert entry["directory"] == spec.kind == "facerestore_models" and entry["url"] in spec.urls
        hf = [u for u in spec.urls if u.startswith("https://huggingface.co/")]
        assert entry["url"] == (hf[0] if hf else spec.urls[0])  # the 1.49 frontend offers downloads from there
        if spec.sha256 and spec.hashed(entry["url"]):
            assert entry["hash"] == spec.sha256 and entry["hash_type"] == "sha256"
        else:
            assert "hash" not in entry
    for entry in workflow.get("models", []):
        spec = REGISTRY[entry["name"]]
        assert entry["directory"] == spec.kind == "facedetection" and entry["url"] in spec.urls
    restorers = [n for n in workflow["nodes"] if n["type"] == "GPENFaceRestore"]
    if restorers and all(tool.landmarks_linked(n) for n in restorers):  # faces from core: no detector to fetch
        assert "models" not in workflow
    for node in (n for n in workflow["nodes"] if n["type"] == tool.MEDIAPIPE_LOADER):
        (entry,) = node["properties"]["models"]
        assert entry == tool.MEDIAPIPE_FACE_MODEL and entry["name"] == node["widgets_values"][0]


def test_core_face_landmarks_template_is_declared_for_newer_hosts():
    """The template chaining core's MediaPipe face nodes (ComfyUI 0.33.0+) says so, links their
    face_landmarks into the restore node, and needs no RetinaFace weights."""
    workflow = json.loads((REPO / "example_workflows" / "gpen_core_face_landmarks.json").read_text())
    types = {n["id"]: n["type"] for n in workflow["nodes"]}
    assert set(workflow["extra"]["gpen"]["requires_nodes"]) == set(CORE_MEDIAPIPE_NODES) <= set(types.values())
    (restore,) = [n for n in workflow["nodes"] if n["type"] == "GPENFaceRestore"]
    (link_id,) = [i["link"] for i in restore["inputs"] if i["name"] == "face_landmarks"]
    link = next(link for link in workflow["links"] if link[0] == link_id)
    assert types[link[1]] == "MediaPipeFaceLandmarker" and link[2] == 0 and link[5] == "FACE_LANDMARKS"
    assert "models" not in workflow


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_requires_nodes_declaration_is_well_formed(template):
    extra = json.loads(template.read_text()).get("extra", {}).get("gpen", {})
    assert set(extra) <= {"requires_nodes"}, f"unknown keys in extra.gpen: {sorted(extra)}"
    needs = extra.get("requires_nodes", [])
    assert isinstance(needs, list) and all(isinstance(n, str) and n for n in needs)


def test_template_models_tool_rewrites_stale_records():
    tool = _tool()
    workflow = json.loads(TEMPLATES[0].read_text())
    stale = json.loads(json.dumps(workflow))
    for node in stale["nodes"]:
        if node["type"] == "GPENModelLoader":
            node["properties"]["models"] = [{"name": "GPEN-BFR-512.pth", "url": "https://example.invalid/x.pth",
                                             "directory": "checkpoints"}]
    stale.pop("models", None)
    fixed = tool.apply(stale)
    assert fixed == workflow and stale != workflow
