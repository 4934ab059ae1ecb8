"""The pack in the real ComfyUI frontend of each host (0.8.0: frontend 1.35; 0.33.0: 1.49), in
headless Chromium.

For every host version (the session servers of conftest.py):

- every ``example_workflows/*.json`` loads with no missing node, every widget value valid for that
  host's node definitions, and the model files it carries offered by the frontend's own
  missing-models view; its thumbnail is taken here;
- the single-image template (aligned mode, seeded GPEN-BFR-256) and the video template (aligned
  mode, on a short generated clip) are queued from the page with ``app.queuePrompt``, finish, and
  the before/after view of ``js/gpen_compare.js`` shows both pictures and the face count.

A template that needs nodes some supported host lacks (e.g. core nodes that only newer ComfyUI
has) says so in ``extra.gpen.requires_nodes`` (see example_workflows/README.md): it is skipped on
the hosts without them, and any other missing node fails. Third-party nodes are checked against the
test stand-ins of ``tests/host_nodes`` (ReActor's published schema).

Screenshots and thumbnails go to the session's temporary folder; with ``GPEN_UPDATE_SCREENSHOTS=1``
(``python docs/screenshots.py``) those of the newest host replace ``docs/screenshot_*.png`` and
``example_workflows/*.jpg``. Skipped without Chromium (``apt-get install chromium``), failed under
``$GPEN_REQUIRE_HOST=1`` (CI).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import browser_utils as B
import host_utils as H

TEMPLATES = sorted((H.REPO / "example_workflows").glob("*.json"))
SINGLE_IMAGE = "gpen_restore_single_image"
VIDEO = "gpen_video_frames"
NEWEST = H.HOST_VERSIONS[-1]
UPDATE = os.environ.get("GPEN_UPDATE_SCREENSHOTS", "") == "1"
THUMBNAIL_SIZE = (640, 480)
MAX_SHOWN_WIDGETS = 7  # the restore node's widgets shown before its advanced inputs are unfolded (issue 26)
DOWNLOADABLE_SOURCES = ("https://huggingface.co/", "https://civitai.com/")
"""Where the 1.49 frontend offers a Download button for a missing model (others: listed, no button)."""
SHOT_AREA = {"x": 70, "y": 92, "width": 1200, "height": 900}
"""A 4:3 part of the canvas free of both frontends' bars and floating buttons (page CSS pixels)."""
HELPERS = (Path(__file__).parent / "browser_helpers.js").read_text()


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    exe = B.chromium_executable()
    if exe is None:
        message = "chromium not found (apt-get install chromium)"
        if H.host_required():
            pytest.fail(f"{message}; ${H.ENV_REQUIRE}=1: the browser tests must run here", pytrace=False)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("chromium")
    browser = B.Chromium(exe, folder / "profile", H.free_port())
    yield browser
    browser.stop()


@pytest.fixture(scope="session")
def shots(tmp_path_factory) -> Path:
    """Where this session's screenshots go (printed at the end of a failing test)."""
    return tmp_path_factory.mktemp("screenshots")


def _open_frontend(chromium, server) -> B.Page:
    """A fresh tab (no stored state) on the server's frontend, the pack's nodes registered."""
    p = chromium.new_page()
    p.navigate(server.url)
    p.wait_for("!!(window.app && window.app.graph && window.app.canvas && window.LiteGraph)", timeout=180,
               what=f"the frontend of {server.host}")
    p.js(HELPERS)
    p.wait_for("window.__gpen.ready()", timeout=60, what="the pack's nodes registered in the frontend")
    time.sleep(1.0)  # first-run dialogs and the default graph settle
    p.js("window.__gpen.closeDialogs()")
    return p


@pytest.fixture
def page(chromium, comfy_server):
    p = _open_frontend(chromium, comfy_server)
    yield p
    p.close()


@pytest.fixture(scope="module")
def loading_page(chromium, comfy_server):
    """One tab per host for the template-loading tests: each loads its template over the last one
    (as a user opening templates one after another does)."""
    p = _open_frontend(chromium, comfy_server)
    yield p
    p.close()


def _load(page, workflow: dict) -> None:
    page.js(f"window.__gpen.load({json.dumps(workflow)})")


def _tag(server) -> str:
    return server.host.version.replace(".", "_")


def _keep(shot: Path, target: Path, server) -> None:
    """Copy a screenshot into the repository (``GPEN_UPDATE_SCREENSHOTS=1``, newest host only)."""
    if UPDATE and server.host.version == NEWEST:
        target.write_bytes(shot.read_bytes())


def _widget_problems(nodes: list[dict], info: dict, declared_models: set[str]) -> list[str]:
    """Widget values the host's node definitions reject (checked as the frontend holds them)."""
    problems = []
    for node in nodes:
        spec = info.get(node["type"])
        if spec is None:
            continue
        inputs = {k: v for g in ("required", "optional") for k, v in spec["input"].get(g, {}).items()}
        for w in node["widgets"]:
            where = f"node {node['id']} ({node['type']}) widget {w['name']}={w['value']!r}"
            top = str(w["name"]).split(".")[0]
            if w["values"] is not None and w["value"] not in w["values"]:
                if not (isinstance(w["value"], str) and w["value"] in declared_models):
                    problems.append(f"{where}: not among the host's options {w['values'][:8]}")
                continue
            if top not in inputs or "." in str(w["name"]):
                continue  # a widget the frontend adds itself, or a nested option checked above
            if w["value"] in declared_models:
                continue
            if not H.widget_value_ok(inputs[top], w["value"]):
                problems.append(f"{where}: not valid for {inputs[top]}")
    return problems


def _declared_models(workflow: dict) -> set[str]:
    names = {m["name"] for m in workflow.get("models", [])}
    for node in workflow["nodes"]:
        names |= {m["name"] for m in node.get("properties", {}).get("models", [])}
    return names


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_template_loads_in_the_real_frontend(loading_page, comfy_server, shots, template):
    page = loading_page
    workflow = json.loads(template.read_text())
    needs = workflow.get("extra", {}).get("gpen", {}).get("requires_nodes", [])
    absent = sorted(n for n in needs if n not in comfy_server.object_info)
    if absent:
        pytest.skip(f"{template.name} declares it needs {absent}, which {comfy_server.host} does not have")
    _load(page, workflow)
    nodes = page.js("window.__gpen.nodes()")

    unregistered = sorted({n["type"] for n in nodes if not n["registered"]})
    assert not unregistered, f"{comfy_server.host} frontend: missing nodes {unregistered}"
    dialogs = page.js("window.__gpen.dialogs()")
    panel = page.js("window.__gpen.errorsPanel()")
    page.screenshot(shots / f"{template.stem}_{_tag(comfy_server)}_on_load.png")
    seen = "\n".join(dialogs) + "\n" + panel
    assert "missing nodes" not in seen.lower() and "Missing Node Packs" not in seen, seen

    declared = _declared_models(workflow)
    problems = _widget_problems(nodes, comfy_server.object_info, declared)
    assert not problems, "\n".join(problems)
    for saved in workflow["nodes"]:  # our nodes come back with the values the template saved, in order;
        if saved["type"].startswith("GPEN"):  # widgets added since it was saved hold their defaults
            loaded = [w["value"] for w in next(n for n in nodes if str(n["id"]) == str(saved["id"]))["widgets"]]
            n = len(saved["widgets_values"])
            assert loaded[:n] == saved["widgets_values"], saved["type"]
            added = H.widget_inputs(comfy_server.object_info[saved["type"]])[n:]
            assert loaded[n:] == [spec[1]["default"] for _, spec in added], saved["type"]
    for node in nodes:  # links keep working where core nodes gained outputs (GetVideoComponents in 0.33.0)
        spec = comfy_server.object_info.get(node["type"])
        if spec is not None and node["outputs"]:
            assert node["outputs"] == spec["output"][:len(node["outputs"])], node

    # The model files the template carries are offered by the frontend's own missing-models view.
    missing_on_host = {m for m in declared if not _model_present(comfy_server, m, workflow)}
    assert missing_on_host, "the test host should lack the real weights the template names"
    for name in missing_on_host:
        if "Missing Models" in "\n".join(dialogs):  # frontend 1.35: the "Missing Models" dialog
            directory = _directory_of(workflow, name)
            assert f"{directory} / {name}" in "\n".join(dialogs), dialogs
        elif _offered_by_widget(workflow, name):  # frontend 1.49: "Missing Models" in the errors panel
            assert name in panel, panel
            if _url_of(workflow, name).startswith(DOWNLOADABLE_SOURCES):  # that frontend's download policy
                assert page.js(f"window.__gpen.downloadOffered({json.dumps(name)})"), panel

    shot = _framed_screenshot(page, shots / f"{template.stem}_{_tag(comfy_server)}.png")
    _keep(_thumbnail(shot), template.with_suffix(".jpg"), comfy_server)


def test_restore_node_folds_its_advanced_inputs(page, comfy_server, shots):
    """ComfyUI 0.33.0's Nodes 2.0 view shows the restore node's few everyday widgets and folds the
    rest behind "Show advanced inputs"; 1.35 (ComfyUI 0.8.0) has no advanced inputs and draws all."""
    workflow = json.loads((H.REPO / "example_workflows" / f"{SINGLE_IMAGE}.json").read_text())
    widgets = [name for name, _ in H.widget_inputs(comfy_server.object_info["GPENFaceRestore"])]
    if not comfy_server.host.folds_advanced_inputs():
        _load(page, workflow)
        assert page.js("window.__gpen.drawnWidgets('GPENFaceRestore')") == widgets
        return
    page.js("app.extensionManager.setting.set('Comfy.VueNodes.Enabled', true).then(() => true)")
    try:
        _load(page, workflow)
        page.js("window.__gpen.closeDialogs()")
        rows = page.wait_for("window.__gpen.shownWidgetRows('GPENFaceRestore')", timeout=30,
                             what="the restore node in the Nodes 2.0 view")
        page.js("window.__gpen.tidy()")
        rect = page.js("window.__gpen.nodeRect('GPENFaceRestore')")
        folded = page.screenshot(shots / f"restore_node_folded_{_tag(comfy_server)}.png", clip=rect)
        _keep(folded, H.REPO / "docs" / "screenshot_node_folded.png", comfy_server)
        assert 0 < len(rows) <= MAX_SHOWN_WIDGETS, rows
        assert set(rows) < set(widgets), rows
        assert page.js("window.__gpen.clickButton(/^show advanced inputs$/i)")
        time.sleep(1.0)
        unfolded = page.js("window.__gpen.shownWidgetRows('GPENFaceRestore')")
        page.screenshot(shots / f"restore_node_unfolded_{_tag(comfy_server)}.png")
        assert sorted(unfolded) == sorted(widgets), unfolded
    finally:  # the setting is stored on the server: the other tests see the classic canvas
        page.js("app.extensionManager.setting.set('Comfy.VueNodes.Enabled', false).then(() => true)")


def _model_present(server, name: str, workflow: dict) -> bool:
    directory = _directory_of(workflow, name)
    return (server.base_dir / "models" / directory / name).exists()


def _model_entry(workflow: dict, name: str) -> dict:
    entries = [*workflow.get("models", []), *(m for n in workflow["nodes"] for m in n.get("properties", {}).get("models", []))]
    return next(m for m in entries if m["name"] == name)


def _directory_of(workflow: dict, name: str) -> str:
    return _model_entry(workflow, name)["directory"]


def _url_of(workflow: dict, name: str) -> str:
    return _model_entry(workflow, name)["url"]


def _offered_by_widget(workflow: dict, name: str) -> bool:
    """Whether a node's ``properties.models`` names ``name`` (1.49 offers only what a widget selects)."""
    return any(m["name"] == name for n in workflow["nodes"] for m in n.get("properties", {}).get("models", []))


def _framed_screenshot(page, path: Path, types: list[str] | None = None, max_scale: float = 1.25) -> Path:
    """The nodes (all, or those of ``types``) framed in :data:`SHOT_AREA`, nothing covering them."""
    page.js("window.__gpen.tidy()")
    page.js(f"window.__gpen.frameInto({json.dumps(SHOT_AREA)}, {json.dumps(types)}, {max_scale})")
    time.sleep(1.0)  # the canvas redraws, DOM widgets follow
    return page.screenshot(path, clip=SHOT_AREA)


def _thumbnail(shot: Path) -> Path:
    """A 640 x 480 JPEG of a 4:3 screenshot (what the frontend's template browser shows)."""
    out = shot.with_name(shot.stem + "_thumb.jpg")
    Image.open(shot).convert("RGB").resize(THUMBNAIL_SIZE, Image.LANCZOS).save(out, quality=85)
    return out


def _queue_and_wait(page, server, timeout: float = 300.0) -> dict:
    """Queue the graph from the page (the frontend builds and posts the prompt) and return the
    history entry of that run once it finished."""
    before = set(server.get("/history"))
    page.js("window.__gpen.closeDialogs()")
    page.js("app.queuePrompt(0, 1).then(() => true)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = {k: v for k, v in server.get("/history").items() if k not in before}
        done = [v for v in new.values() if v.get("status", {}).get("status_str") in ("success", "error")]
        if done:
            (entry,) = done
            assert entry["status"]["status_str"] == "success", [
                m[1].get("exception_message") for m in entry["status"]["messages"] if "error" in m[0]]
            return entry
        time.sleep(0.5)
    raise TimeoutError(f"the prompt queued from the page did not finish within {timeout}s:\n{server.log()[-3000:]}")


def _restore_node_id(entry: dict) -> str:
    ids = [k for k, v in entry["outputs"].items() if "gpen_before" in v]
    assert len(ids) == 1, entry["outputs"]
    return ids[0]


def _check_compare_view(page, entry: dict, expected_caption: str) -> dict:
    ui = entry["outputs"][_restore_node_id(entry)]
    view = page.wait_for("(() => { const c = window.__gpen.compare(); return c && c.images.length === 2 &&"
                         " c.images.every(i => i.shown && i.complete && i.width > 0) && c.caption ? c : null; })()",
                         timeout=60, what="both pictures of the before/after view")
    before, after = view["images"]
    assert before["alt"] == "before" and after["alt"].startswith("after")
    assert ui["gpen_before"][0]["filename"] in before["src"] and ui["gpen_after"][0]["filename"] in after["src"]
    assert view["caption"] == expected_caption
    return view


def _prepare_aligned_run(page, workflow: dict) -> None:
    _load(page, workflow)
    page.js("window.__gpen.closeDialogs()")
    page.js(f"window.__gpen.setWidget('GPENModelLoader', 'model_name', {json.dumps(H.CHECKPOINT)})")
    page.js("window.__gpen.setWidget('GPENFaceRestore', 'face_mode', 'aligned')")


def test_single_image_template_runs_from_the_page(page, comfy_server, shots):
    workflow = json.loads((H.REPO / "example_workflows" / f"{SINGLE_IMAGE}.json").read_text())
    _load(page, workflow)
    overview = _framed_screenshot(page, shots / f"workflow_{_tag(comfy_server)}.png")
    _keep(overview, H.REPO / "docs" / "screenshot_workflow.png", comfy_server)

    _prepare_aligned_run(page, workflow)
    page.js(f"window.__gpen.setWidget('LoadImage', 'image', {json.dumps(H.FACE_CROP)})")
    entry = _queue_and_wait(page, comfy_server)
    _check_compare_view(page, entry, "1 aligned face crop restored")

    # The saved picture is the network's restoration of the crop (the host tests check its values).
    saved = [f for v in entry["outputs"].values() for f in v.get("images", []) if f.get("type") == "output"]
    assert saved, entry["outputs"]
    img = np.asarray(Image.open(comfy_server.base_dir / "output" / saved[0]["subfolder"] / saved[0]["filename"]))
    assert img.shape == (256, 256, 3)

    compare = _framed_screenshot(page, shots / f"compare_{_tag(comfy_server)}.png",
                                 types=["GPENFaceRestore", "SaveImage"], max_scale=1.6)
    _keep(compare, H.REPO / "docs" / "screenshot_compare.png", comfy_server)


def test_video_template_runs_from_the_page(page, comfy_server, shots):
    import cv2

    workflow = json.loads((H.REPO / "example_workflows" / f"{VIDEO}.json").read_text())
    _prepare_aligned_run(page, workflow)
    page.js(f"window.__gpen.setWidget('LoadVideo', 'file', {json.dumps(H.CLIP)})")
    entry = _queue_and_wait(page, comfy_server)
    _check_compare_view(page, entry, f"{H.CLIP_FRAMES} aligned face crops restored")

    videos = [f for v in entry["outputs"].values() for key in ("images", "video", "animated", "gifs")
              for f in (v.get(key) or []) if isinstance(f, dict) and str(f.get("filename", "")).endswith((".mp4", ".mkv", ".webm"))]
    assert len(videos) == 1, entry["outputs"]
    path = comfy_server.base_dir / "output" / videos[0].get("subfolder", "") / videos[0]["filename"]
    cap = cv2.VideoCapture(str(path))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == H.CLIP_FRAMES
    _framed_screenshot(page, shots / f"video_{_tag(comfy_server)}.png")

