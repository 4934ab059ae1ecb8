"""Unit tests of the ComfyUI adapters' host-independent parts (no ComfyUI needed).

``nodes.folders`` takes ComfyUI's folder table as an argument and ``nodes.runtime`` needs nothing
from ComfyUI, so small stand-ins exercise them here; the node classes themselves are tested inside
the real host (tests/test_comfyui_host.py).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from nodes.folders import DETECTION_MODELS, RESTORE_EXTENSIONS, RESTORE_MODELS, merge_folder
from nodes.runtime import ModelCache

REPO = Path(__file__).resolve().parents[1]


# --- root package -------------------------------------------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec("folder_paths") is not None,
                    reason="ComfyUI is importable here; the host test covers loading inside it")
def test_root_package_imports_without_comfyui():
    spec = importlib.util.spec_from_file_location("gpen_pack_root_under_test", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    assert module.NODE_CLASS_MAPPINGS == {} and module.NODE_DISPLAY_NAME_MAPPINGS == {}
    web = REPO / module.WEB_DIRECTORY
    assert any(web.glob("*.js")), f"WEB_DIRECTORY {web} holds no frontend extension"


# --- folder registration ------------------------------------------------------------------------

def test_merge_creates_missing_entry():
    table = {}
    merge_folder(table, RESTORE_MODELS, "/m/facerestore_models", RESTORE_EXTENSIONS)
    folders, exts = table[RESTORE_MODELS]
    assert folders == ["/m/facerestore_models"]
    assert set(exts) == set(RESTORE_EXTENSIONS) and ".onnx" in exts


def test_merge_keeps_other_packs_entry_and_objects():
    # ReActor-style registration that happened before ours: other folder, no .onnx.
    theirs_folders = ["/other/pack/models/facerestore_models"]
    theirs_exts = {".pth", ".pt", ".bin"}
    table = {RESTORE_MODELS: (theirs_folders, theirs_exts)}
    merge_folder(table, RESTORE_MODELS, "/m/facerestore_models", RESTORE_EXTENSIONS)
    merged = table[RESTORE_MODELS]
    merge_folder(table, RESTORE_MODELS, "/m/facerestore_models", RESTORE_EXTENSIONS)  # idempotent
    folders, exts = table[RESTORE_MODELS]
    assert table[RESTORE_MODELS] is merged and exts is merged[1]
    assert folders is theirs_folders  # the folder list other packs hold stays valid
    assert folders == ["/other/pack/models/facerestore_models", "/m/facerestore_models"]
    assert exts == {".pth", ".pt", ".bin"} | set(RESTORE_EXTENSIONS)
    assert theirs_exts == {".pth", ".pt", ".bin"}  # their set is never changed: it may be shared


def test_merge_never_changes_comfyuis_shared_extension_set():
    """ReActor and facerestore_cf register facerestore_models with ComfyUI's supported_pt_extensions,
    the set checkpoints, loras, vae... use: adding .onnx to it would list .onnx in every core loader."""
    supported = {".ckpt", ".pt", ".bin", ".pth", ".safetensors"}
    table = {"checkpoints": (["/m/checkpoints"], supported), "loras": (["/m/loras"], supported),
             RESTORE_MODELS: (["/m/facerestore_models"], supported)}
    merge_folder(table, RESTORE_MODELS, "/m/facerestore_models", RESTORE_EXTENSIONS)
    assert supported == {".ckpt", ".pt", ".bin", ".pth", ".safetensors"}
    assert table["checkpoints"][1] is supported and ".onnx" not in table["loras"][1]
    assert ".onnx" in table[RESTORE_MODELS][1] and table[RESTORE_MODELS][1] is not supported
    # the set may also be shared with something outside the table (ComfyUI's module global)
    alone = {".pth"}
    table = {RESTORE_MODELS: (["/m/f"], alone)}
    merge_folder(table, RESTORE_MODELS, "/m/f", RESTORE_EXTENSIONS, shared=[alone])
    assert alone == {".pth"} and ".onnx" in table[RESTORE_MODELS][1]


def test_merge_copies_a_folder_list_another_entry_shares():
    shared_list = ["/m/upscale_models"]
    table = {"upscale_models": (shared_list, {".pth"}), RESTORE_MODELS: (shared_list, {".pth"})}
    merge_folder(table, RESTORE_MODELS, "/m/facerestore_models", RESTORE_EXTENSIONS)
    assert shared_list == ["/m/upscale_models"] and table["upscale_models"][0] is shared_list
    assert table[RESTORE_MODELS][0] == ["/m/upscale_models", "/m/facerestore_models"]


def test_merge_extension_list_and_tuple_entries():
    exts_list = [".pth"]
    table = {DETECTION_MODELS: (["/a"], exts_list), RESTORE_MODELS: (["/b"], (".pth",))}
    merge_folder(table, DETECTION_MODELS, "/a", (".pth", ".onnx"))
    assert table[DETECTION_MODELS][0] == ["/a"] and set(table[DETECTION_MODELS][1]) == {".pth", ".onnx"}
    assert exts_list == [".pth"]
    merge_folder(table, RESTORE_MODELS, "/c", (".onnx",))
    assert table[RESTORE_MODELS][0] == ["/b", "/c"] and set(table[RESTORE_MODELS][1]) == {".pth", ".onnx"}


def test_merge_leaves_unrelated_entries_alone():
    table = {"upscale_models": (["/u"], {".pth"})}
    before = (list(table["upscale_models"][0]), set(table["upscale_models"][1]))
    merge_folder(table, RESTORE_MODELS, "/m/facerestore_models", RESTORE_EXTENSIONS)
    assert (table["upscale_models"][0], table["upscale_models"][1]) == before


# --- model cache --------------------------------------------------------------------------------

def test_model_cache_reloads_on_file_change_and_precision(tmp_path):
    path = tmp_path / "GPEN-BFR-256.pth"
    path.write_bytes(b"version 1")
    loads = []

    def load(p):
        loads.append(p)
        return object()

    cache = ModelCache(capacity=1)
    a = cache.get_or_load(str(path), "fp32", load)
    assert cache.get_or_load(str(path), "fp32", load) is a and len(loads) == 1

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same content, newer file
    b = cache.get_or_load(str(path), "fp32", load)
    assert b is not a and len(loads) == 2

    c = cache.get_or_load(str(path), "fp16", load)
    assert c is not b and len(loads) == 3 and len(cache) == 1  # capacity 1: the fp32 copy is gone
    assert cache.get_or_load(str(path), "fp32", load) is not b and len(loads) == 4


def test_model_cache_drops_stale_versions(tmp_path):
    path = tmp_path / "m.pth"
    path.write_bytes(b"1")
    cache = ModelCache(capacity=4)
    cache.get_or_load(str(path), "fp32", lambda p: "old")
    path.write_bytes(b"22")  # size changes: another version of the same file
    assert cache.get_or_load(str(path), "fp32", lambda p: "new") == "new"
    assert len(cache) == 1


# --- which outputs the workflow takes -----------------------------------------------------------

PROMPT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
    "3": {"class_type": "GPENFaceRestore", "inputs": {"image": ["1", 0]}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0]}},
    "5": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
}


def test_output_used_reads_the_links_of_the_prompt():
    from nodes.outputs import output_used

    assert output_used(PROMPT, "3", 0) is True and output_used(PROMPT, "3", 1) is True
    assert output_used(PROMPT, "3", 2) is False  # face_crops: nothing takes it
    assert output_used(PROMPT, 3, 2) is False  # ids may come as ints
    assert output_used({**PROMPT, "6": {"class_type": "X", "inputs": {"images": ["3", 2]}}}, "3", 2) is True
    assert output_used(PROMPT, "9", 2) is None and output_used(None, "3", 2) is None and output_used({}, "3", 2) is None

    class Dynamic:  # ComfyUI's DynamicPrompt (prompt plus nodes expanded while running)
        def all_node_ids(self):
            return [*PROMPT, "7"]

        def get_node(self, node_id):
            return PROMPT.get(node_id) or {"class_type": "X", "inputs": {"x": ["3", 2]}}

    assert output_used(Dynamic(), "3", 2) is True


def test_used_in_running_prompt_asks_comfyuis_queue(monkeypatch):
    import types

    from nodes import outputs

    running = [(0, "id", PROMPT, {}, ["4"])]
    queue = types.SimpleNamespace(get_current_queue=lambda: (running, []))
    fake_server = types.SimpleNamespace(PromptServer=types.SimpleNamespace(
        instance=types.SimpleNamespace(prompt_queue=queue)))
    monkeypatch.setitem(sys.modules, "server", fake_server)
    assert outputs.used_in_running_prompt("3", "GPENFaceRestore", 2) is False
    assert outputs.used_in_running_prompt("3", "GPENFaceRestore", 1) is True
    assert outputs.used_in_running_prompt("3", "OtherNode", 2) is None  # not our node: cannot tell
    running.clear()
    assert outputs.used_in_running_prompt("3", "GPENFaceRestore", 2) is None
    monkeypatch.setitem(sys.modules, "server", None)  # not inside ComfyUI
    assert outputs.used_in_running_prompt("3", "GPENFaceRestore", 2) is None


def test_crops_are_dropped_only_when_both_views_agree():
    import types

    from nodes.outputs import output_wanted

    hidden = types.SimpleNamespace(unique_id="3", prompt=PROMPT, dynprompt=None)
    assert output_wanted(hidden, 2, {"3": False}) is False  # nothing takes face_crops: not kept
    assert output_wanted(hidden, 2, {"3": None}) is True  # the fingerprint could not tell: keep them
    assert output_wanted(hidden, 2, {}) is True
    assert output_wanted(hidden, 0, {"3": False}) is True  # image is taken
    assert output_wanted(types.SimpleNamespace(unique_id=None, prompt=None), 2, {"None": False}) is True
