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
    merge_folder(table, RESTORE_MODELS, "/m/facerestore_models", RESTORE_EXTENSIONS)  # idempotent
    folders, exts = table[RESTORE_MODELS]
    assert folders is theirs_folders and exts is theirs_exts  # references other packs hold stay valid
    assert folders == ["/other/pack/models/facerestore_models", "/m/facerestore_models"]
    assert exts == {".pth", ".pt", ".bin"} | set(RESTORE_EXTENSIONS)


def test_merge_extension_list_and_tuple_entries():
    exts_list = [".pth"]
    table = {DETECTION_MODELS: (["/a"], exts_list), RESTORE_MODELS: (["/b"], (".pth",))}
    merge_folder(table, DETECTION_MODELS, "/a", (".pth", ".onnx"))
    assert table[DETECTION_MODELS] == (["/a"], [".pth", ".onnx"]) and table[DETECTION_MODELS][1] is exts_list
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
