"""The pack inside real ComfyUI hosts (0.8.0 and 0.33.0): registration, a full run, errors,
templates, docs.

Every test runs once per host version (the session fixture ``comfy_server`` of conftest.py: one
headless ``--cpu`` server per version, with this repository linked into ``custom_nodes`` and a
seeded checkpoint in the full GPEN-BFR-256 layout in ``models/facerestore_models``). Skipped when
a host cannot be installed (``<repo>/../shared/comfyui`` absent), failed instead under
``$GPEN_REQUIRE_HOST=1``.
"""

from __future__ import annotations

import json
import re
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

import host_utils as H

OUR_NODES = ("GPENModelLoader", "GPENFaceRestore")
CHECKPOINT = H.CHECKPOINT
INPUT_IMAGE = H.FACE_CROP
FRONTEND_ONLY_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
THIRD_PARTY_NODES = {"ReActorFaceSwap": "comfyui-reactor"}  # node -> the test stand-in pack declaring it


@pytest.fixture
def host(comfy_server):
    return comfy_server


def _aligned_prompt(strength: float = 1.0, prefix: str = "gpen_aligned", face_mode: str = "aligned") -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": INPUT_IMAGE}},
        "2": {"class_type": "GPENModelLoader", "inputs": {"model_name": CHECKPOINT, "precision": "auto"}},
        "3": {"class_type": "GPENFaceRestore", "inputs": {"image": ["1", 0], "gpen_model": ["2", 0],
                                                          "face_mode": face_mode, "strength": strength}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
    }


def _saved_image(host, entry: dict, node_id: str = "4") -> np.ndarray:
    files = H.output_files(entry, node_id)
    assert len(files) == 1, entry.get("outputs")
    f = files[0]
    path = host.base_dir / "output" / f.get("subfolder", "") / f["filename"]
    return np.asarray(Image.open(path).convert("RGB"))


def _error(entry: dict) -> dict:
    assert entry["status"]["status_str"] == "error", entry["status"]
    errors = H.status_messages(entry, "execution_error")
    assert len(errors) == 1, entry["status"]
    return errors[0]


def test_pack_loads_and_nodes_are_registered(host):
    log = host.log()
    pack_failures = [line for line in log.splitlines()
                     if H.PACK_DIR_NAME in line and ("IMPORT FAILED" in line or "Cannot import" in line)]
    assert not pack_failures, "\n".join(pack_failures)
    assert f"custom_nodes/{H.PACK_DIR_NAME}" in log  # ComfyUI listed our pack among the loaded ones

    info = host.object_info
    loader, restore = info["GPENModelLoader"], info["GPENFaceRestore"]
    assert loader["display_name"] == "Load GPEN Model" and restore["display_name"] == "GPEN Face Restore"
    assert loader["python_module"] == f"custom_nodes.{H.PACK_DIR_NAME}"

    assert loader["input_order"]["required"] == ["model_name", "precision"]
    assert CHECKPOINT in loader["input"]["required"]["model_name"][1]["options"]
    assert loader["input"]["required"]["precision"][1]["options"] == ["auto", "fp32", "fp16", "bf16"]
    assert loader["output"] == ["GPEN_MODEL"]

    assert restore["input_order"]["required"] == ["image", "gpen_model", "face_mode", "strength"]
    assert restore["input"]["required"]["image"][0] == "IMAGE"
    assert restore["input"]["required"]["gpen_model"][0] == "GPEN_MODEL"
    assert restore["input"]["required"]["face_mode"][1]["options"] == ["detect", "aligned"]
    optional = restore["input"]["optional"]
    assert optional["mask"][0] == "MASK" and optional["reference"][0] == "IMAGE"
    for name in ("template", "detector", "detection_threshold", "face_selection", "face_indices", "sort_faces",
                 "min_face_size", "face_parsing", "color_correction", "temporal_smoothing", "face_batch_size",
                 "reference_threshold", "track_faces", "max_gap", "min_track", "regions", "occlusion", "upscale",
                 "upscale_model", "temporal_consistency"):
        assert name in optional, name
    assert optional["track_faces"][1]["default"] is True and optional["max_gap"][1]["default"] == 3
    assert optional["min_track"][1]["default"] == 2
    for name, spec in {**restore["input"]["required"], **optional, **loader["input"]["required"]}.items():
        assert spec[1].get("tooltip"), f"input {name} has no tooltip"
        if name in optional and name not in ("mask", "reference", "upscale_model", "face_landmarks"):  # sockets: no default
            assert "default" in spec[1], f"optional input {name} has no default"
    assert restore["output"] == ["IMAGE", "MASK", "IMAGE", "STRING"]
    assert restore["output_name"] == ["image", "mask", "face_crops", "info"]

    # Frontend extension, node help pages and templates are served.
    assert f"/extensions/{H.PACK_DIR_NAME}/gpen_compare.js" in host.get("/extensions")
    for node in OUR_NODES:
        with urllib.request.urlopen(f"{host.url}/extensions/{H.PACK_DIR_NAME}/docs/{node}.md") as r:
            assert r.status == 200 and "# " in r.read().decode()
    templates = host.get("/workflow_templates")
    shipped = sorted(p.stem for p in (H.REPO / "example_workflows").glob("*.json"))
    assert sorted(templates[H.PACK_DIR_NAME]) == shipped and shipped


def test_aligned_restore_matches_core(host):
    entry = host.run(_aligned_prompt())
    assert entry["status"]["status_str"] == "success", [
        m[1].get("exception_message") for m in entry["status"]["messages"] if "error" in m[0]]
    saved = _saved_image(host, entry).astype(np.float32) / 255.0

    # The same computation straight from the core: network output mapped from -1..1 to 0..1.
    from gpen import load_model

    net = load_model(host.base_dir / "models" / "facerestore_models" / CHECKPOINT)
    src = np.asarray(Image.open(host.base_dir / "input" / INPUT_IMAGE).convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(src).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        expected = ((net(x)[0].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()

    assert saved.shape == expected.shape == (256, 256, 3)
    assert np.abs(saved - expected).max() <= 1 / 255 + 1e-5  # SaveImage truncates to 8 bits
    assert np.abs(expected - src).mean() > 0.02  # the network really changed the picture
    assert 0.02 < expected.mean() < 0.98  # and did not saturate it

    ui = entry["outputs"]["3"]
    assert ui["gpen_faces"] == [1] and ui["gpen_mode"] == ["aligned"]
    for key in ("gpen_before", "gpen_after"):
        (f,) = ui[key]
        assert f["type"] == "temp" and (host.base_dir / "temp" / f.get("subfolder", "") / f["filename"]).is_file()


def test_missing_detector_weights_is_a_node_error_and_server_keeps_serving(host):
    entry = host.run(_aligned_prompt(face_mode="detect", prefix="gpen_detect"))
    err = _error(entry)
    assert err["node_type"] == "GPENFaceRestore"
    message = err["exception_message"]
    assert "detection_Resnet50_Final.pth" in message
    assert str(host.base_dir / "models" / "facedetection") in message
    assert "Traceback" not in message

    entry = host.run(_aligned_prompt(strength=0.5, prefix="gpen_after_error"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert _saved_image(host, entry).shape == (256, 256, 3)


def test_bad_face_indices_fail_before_detection(host):
    # detector weights are absent here: an error about them would mean detection ran first
    prompt = _aligned_prompt(face_mode="detect", prefix="gpen_bad_indices")
    prompt["3"]["inputs"].update(face_selection="by index", face_indices=" ")
    err = _error(host.run(prompt))
    assert err["node_type"] == "GPENFaceRestore"
    assert "face indices is empty" in err["exception_message"]
    assert "detection_Resnet50_Final.pth" not in err["exception_message"]


def test_detect_mode_outputs_in_order_when_no_face_is_found(host):
    # Images below the detector's minimum side hold no detectable face, so detect mode runs its
    # whole node path without detector weights: every output must come back in the right slot.
    tiny = "gpen_host_tiny.png"
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(host.base_dir / "input" / tiny)
    prompt = _aligned_prompt(face_mode="detect", prefix="gpen_noface_image")
    prompt["1"]["inputs"]["image"] = tiny
    prompt["3"]["inputs"].update(face_selection="by index", face_indices="0,2", sort_faces="largest-first")
    prompt["5"] = {"class_type": "MaskToImage", "inputs": {"mask": ["3", 1]}}
    prompt["6"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "gpen_noface_mask"}}
    prompt["7"] = {"class_type": "SaveImage", "inputs": {"images": ["3", 2], "filename_prefix": "gpen_noface_crop"}}
    prompt["8"] = {"class_type": "PreviewAny", "inputs": {"source": ["3", 3]}}
    entry = host.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]

    assert np.array_equal(_saved_image(host, entry, "4"), pixels)  # unchanged, bit for bit
    mask = _saved_image(host, entry, "6")
    assert mask.shape == (12, 10, 3) and not mask.any()
    crop = _saved_image(host, entry, "7")
    assert crop.shape == (256, 256, 3) and not crop.any()  # the one black placeholder crop
    (text,) = entry["outputs"]["8"]["text"]
    assert "no faces found" in text
    assert entry["outputs"]["3"]["gpen_faces"] == [0] and entry["outputs"]["3"]["gpen_mode"] == ["detect"]


def test_cancel_stops_the_restore_between_chunks(host):
    frames = 8
    prompt = _aligned_prompt(prefix="gpen_interrupted")
    prompt["5"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": frames}}
    prompt["3"]["inputs"].update(image=["5", 0], face_batch_size=1, strength=0.9)
    messages = H.interrupt_after_progress(host, prompt, node_id="3")
    steps = [m["data"]["value"] for m in messages if m["type"] == "progress" and m["data"].get("node") == "3"]
    stops = [m for m in messages if m["type"] in ("execution_interrupted", "execution_error", "execution_success")]
    assert stops and stops[-1]["type"] == "execution_interrupted", stops
    assert stops[-1]["data"]["node_id"] == "3"
    assert steps and max(steps) < frames  # stopped between chunks, before the batch was done
    assert host.run(_aligned_prompt(strength=0.8, prefix="gpen_after_cancel"))["status"]["status_str"] == "success"


def test_missing_model_file_names_file_and_folder(host):
    prompt = _aligned_prompt(prefix="gpen_missing_model")
    prompt["2"]["inputs"]["model_name"] = "GPEN-BFR-512.pth"
    err = _error(host.run(prompt))
    assert err["node_type"] == "GPENModelLoader"
    assert "GPEN-BFR-512.pth" in err["exception_message"]
    assert str(host.base_dir / "models" / "facerestore_models") in err["exception_message"]
    assert CHECKPOINT in err["exception_message"]  # lists what is available


def test_released_files_not_on_disk_are_offered_and_fail_clearly_offline(host):
    options = host.object_info["GPENModelLoader"]["input"]["required"]["model_name"][1]["options"]
    assert options[0] == CHECKPOINT and "GPEN-BFR-512.pth [download]" in options
    prompt = _aligned_prompt(prefix="gpen_download_offline")
    prompt["2"]["inputs"]["model_name"] = "GPEN-BFR-2048.pth [download]"
    err = _error(host.run(prompt))  # the host runs with GPEN_OFFLINE=1
    assert err["node_type"] == "GPENModelLoader"
    message = err["exception_message"]
    assert "GPEN-BFR-2048.pth" in message and "GPEN_OFFLINE" in message and "modelscope.cn" in message
    assert str(host.base_dir / "models" / "facerestore_models") in message


def test_empty_model_folder_says_which_file_goes_where(host):
    folder = host.base_dir / "models" / "facerestore_models"
    parked = host.base_dir / "parked_models"
    parked.mkdir()
    for f in list(folder.iterdir()):
        f.rename(parked / f.name)
    try:
        prompt = _aligned_prompt(prefix="gpen_no_models")
        prompt["2"]["inputs"]["model_name"] = ""  # what an empty drop-down sends
        err = _error(host.run(prompt))
    finally:
        for f in list(parked.iterdir()):
            f.rename(folder / f.name)
        parked.rmdir()
    assert err["node_type"] == "GPENModelLoader"
    message = err["exception_message"]
    assert "No face restoration model" in message and str(folder) in message and "GPEN-BFR-512.pth" in message


def test_wrong_file_type_is_a_node_error(host):
    bogus = host.base_dir / "models" / "facerestore_models" / "not_a_model.pth"
    bogus.write_bytes(b"this is not a checkpoint")
    prompt = _aligned_prompt(prefix="gpen_bogus")
    prompt["2"]["inputs"]["model_name"] = bogus.name
    err = _error(host.run(prompt))
    assert err["node_type"] == "GPENModelLoader"
    assert bogus.name in err["exception_message"] and "Traceback" not in err["exception_message"]


MAX_SHOWN_WIDGETS = 7
"""What the restore node may show before its advanced inputs are unfolded (issue 26)."""
SAVED_WIDGET_ORDER = ("face_mode", "strength", "template", "detector", "detection_threshold", "face_selection",
                      "face_indices", "sort_faces", "min_face_size", "face_parsing", "color_correction",
                      "temporal_smoothing", "face_batch_size", "reference_threshold", "track_faces", "max_gap",
                      "min_track", "regions", "occlusion", "upscale")
"""The restore node's widgets in the order saved workflows hold their values (``widgets_values``):
new inputs go after them."""


def test_restore_node_shows_few_widgets_and_folds_the_rest(host):
    spec = host.object_info["GPENFaceRestore"]
    widgets = H.widget_inputs(spec)
    assert tuple(name for name, _ in widgets)[:len(SAVED_WIDGET_ORDER)] == SAVED_WIDGET_ORDER
    inputs = {**spec["input"]["required"], **spec["input"].get("optional", {})}
    assert all(opts.get("tooltip") for _, opts in inputs.values())
    shown = [name for name, (_, opts) in widgets if not opts.get("advanced")]
    if host.host.folds_advanced_inputs():
        assert len(shown) <= MAX_SHOWN_WIDGETS, shown
        # the README tells users which ones they see
        nodes_section = (H.REPO / "README.md").read_text().split("## Nodes", 1)[1].split("\n## ", 1)[0]
        assert all(f"`{name}`" in nodes_section for name in shown), shown
    else:  # ComfyUI 0.8.0 has no advanced inputs: the schema loads there and shows everything
        assert len(shown) == len(widgets)
        assert not any("advanced" in opts for _, opts in inputs.values())


def _check_workflow(workflow: dict, info: dict, name: str) -> list[str]:
    problems = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    for node in workflow["nodes"]:
        t = node["type"]
        where = f"{name}: node {node['id']} ({t})"
        if t in FRONTEND_ONLY_NODES:
            continue
        if t not in info:
            problems.append(f"{where}: unknown node type")
            continue
        spec = info[t]
        widgets = H.widget_inputs(spec)
        widget_names = [w for w, _ in widgets]
        input_types = {k: v[0] for g in ("required", "optional") for k, v in spec["input"].get(g, {}).items()}
        outputs = spec["output"]
        values = node.get("widgets_values", [])
        if t in OUR_NODES or t in THIRD_PARTY_NODES:
            # a workflow saved before inputs were appended holds fewer values: the rest take their defaults
            saved_before = t in OUR_NODES and len(values) >= len(SAVED_WIDGET_ORDER)
            if len(values) > len(widgets) or (len(values) < len(widgets) and not saved_before):
                problems.append(f"{where}: widgets_values {values} do not match widgets {widget_names}")
            for (wname, wspec), value in zip(widgets, values):
                if wname == "model_name":  # the user's file: any name with a supported extension
                    ok = isinstance(value, str) and value.lower().endswith((".pth", ".pt", ".safetensors", ".onnx"))
                else:
                    ok = H.widget_value_ok(wspec, value)
                if not ok:
                    problems.append(f"{where}: widget {wname}={value!r} not valid for {wspec}")
        for inp in node.get("inputs", []):
            if inp["name"] not in input_types:
                problems.append(f"{where}: input {inp['name']} does not exist")
                continue
            want = input_types[inp["name"]]
            want = "COMBO" if isinstance(want, list) else want
            if inp.get("link") is not None:
                link = links.get(inp["link"])
                if link is None or link[3] != node["id"]:
                    problems.append(f"{where}: input {inp['name']} has a dangling link {inp['link']}")
                    continue
                src_outputs = info.get(nodes[link[1]]["type"], {}).get("output", [])
                got = src_outputs[link[2]] if link[2] < len(src_outputs) else None
                if got is None or link[5] != got or (want != "*" and got != want):
                    problems.append(f"{where}: input {inp['name']} ({want}) linked from a wrong output")
        for slot, out in enumerate(node.get("outputs", [])):
            if slot >= len(outputs) or out["type"] != outputs[slot]:
                problems.append(f"{where}: output {slot} {out['type']} does not match {outputs}")
    return problems


def test_example_workflows_match_the_nodes(host):
    files = sorted((H.REPO / "example_workflows").glob("*.json"))
    assert len(files) >= 3
    seen_types = set()
    problems = []
    for f in files:
        workflow = json.loads(f.read_text())
        served = host.get(f"/api/workflow_templates/{H.PACK_DIR_NAME}/{f.name}")
        assert served == workflow
        # core nodes this host lacks must be declared (example_workflows/README.md); such a template is
        # checked on the hosts that have them
        needs = set(workflow.get("extra", {}).get("gpen", {}).get("requires_nodes", []))
        absent = {n["type"] for n in workflow["nodes"]} - set(host.object_info) - FRONTEND_ONLY_NODES
        assert absent <= needs, f"{f.name}: {sorted(absent - needs)} missing in {host.host} and not in requires_nodes"
        if absent:
            continue
        seen_types |= {n["type"] for n in workflow["nodes"]}
        problems += _check_workflow(workflow, host.object_info, f.name)
    assert not problems, "\n".join(problems)
    assert set(OUR_NODES) <= seen_types and set(THIRD_PARTY_NODES) <= seen_types
    for node, pack in THIRD_PARTY_NODES.items():  # checked against the test stand-in, not a real pack
        assert host.object_info[node]["python_module"] == f"custom_nodes.{pack}"
    assert not {t for t in seen_types if t.startswith("GPEN")} - set(OUR_NODES)


def test_node_reference_lists_every_input_with_its_default(host):
    text = (H.REPO / "docs" / "nodes.md").read_text()
    for node in OUR_NODES:
        spec = host.object_info[node]
        # the node's own input table: from its heading to its output table
        heading = re.search(rf"^### .*\(`{node}`\)$", text, flags=re.M)
        assert heading, f"docs/nodes.md has no section for {node}"
        doc = text[heading.end():].split("| Output |", 1)[0]
        for group in ("required", "optional"):
            for name, (kind, opts) in spec["input"].get(group, {}).items():
                row = re.search(rf"^\| `{re.escape(name)}` \|.*$", doc, flags=re.M)
                assert row, f"docs/nodes.md has no row for {node}.{name}"
                if "default" in opts:
                    default = json.dumps(opts["default"]) if not isinstance(opts["default"], str) else opts["default"]
                    assert f"`{default}`" in row.group(0), f"docs/nodes.md: {node}.{name} default {default} missing"
                if host.host.folds_advanced_inputs():
                    shown = "advanced" if opts.get("advanced") else "yes"
                    cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.group(0))]
                    assert cells[5] == shown, f"docs/nodes.md: {node}.{name} Shown should be {shown}, is {cells[5]}"


def test_help_pages_name_every_input_and_what_is_advanced(host):
    for node in OUR_NODES:
        page = (H.REPO / "js" / "docs" / f"{node}.md").read_text()
        spec = host.object_info[node]
        inputs = {**spec["input"]["required"], **spec["input"].get("optional", {})}
        assert [n for n in inputs if f"**{n}**" not in page] == [], f"js/docs/{node}.md misses inputs"
        if host.host.folds_advanced_inputs() and any(opts.get("advanced") for _, opts in inputs.values()):
            advanced_part = page.split("### Advanced", 1)[1].split("\n## ", 1)[0]
            wrong = [n for n, (_, opts) in inputs.items() if (f"**{n}**" in advanced_part) != bool(opts.get("advanced"))]
            assert wrong == [], f"js/docs/{node}.md: under or missing from '### Advanced': {wrong}"
