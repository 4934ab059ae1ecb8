"""The pack's networks under ComfyUI's memory manager, in both real hosts (CPU).

A test-only node pack (``tests/host_nodes/gpen_test_probe``) reports what
``model_management.current_loaded_models`` holds from inside a prompt (a probe node that runs
after the restore node) and between prompts (``GET /gpen_test/memory``). "Unload models" is the
host's own ``POST /free``, which calls ``model_management.unload_all_models()``.
"""

from __future__ import annotations

import json
import time

import numpy as np
from PIL import Image

import host_utils as H

MiB = 2 ** 20


def _prompt(strength: float = 1.0, face_mode: str = "aligned", **restore) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": H.FACE_CROP}},
        "2": {"class_type": "GPENModelLoader", "inputs": {"model_name": H.CHECKPOINT, "precision": "auto"}},
        "3": {"class_type": "GPENFaceRestore", "inputs": {"image": ["1", 0], "gpen_model": ["2", 0],
                                                          "face_mode": face_mode, "strength": strength, **restore}},
        "4": {"class_type": "GPENTestMemoryProbe", "inputs": {"image": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "gpen_memory"}},
    }


def _run(server, prompt: dict) -> dict:
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", [
        m[1].get("exception_message") for m in entry["status"]["messages"] if "error" in m[0]]
    return entry


def _report(entry: dict) -> dict:
    (text,) = entry["outputs"]["4"]["report"]
    return json.loads(text)


def _hosted(report: dict, cls: str) -> list[dict]:
    return [m for m in report["models"] if m["class"] == cls]


def _saved(server, entry: dict) -> np.ndarray:
    (f,) = H.output_files(entry, "5")
    return np.asarray(Image.open(server.base_dir / "output" / f.get("subfolder", "") / f["filename"]))


def _unload_all(server, timeout: float = 20.0) -> dict:
    """Press ComfyUI's "Unload models and node cache" and wait until the host has unloaded everything.

    The host acts on that request between two queue items; its worker may miss the wake-up while
    it garbage-collects after a prompt, so a trivial prompt is queued behind the request.
    """
    status, _ = server.post("/free", {"unload_models": True, "free_memory": True})
    assert status == 200
    server.run({"1": {"class_type": "LoadImage", "inputs": {"image": H.FACE_CROP}},
                "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = server.get("/gpen_test/memory?scan=1")
        if not report["models"]:
            return report
        time.sleep(0.2)
    raise AssertionError(f"models still loaded {timeout}s after POST /free: {report['models']}")


def test_gpen_is_a_loaded_model_during_the_run_and_unload_frees_it(comfy_server):
    _unload_all(comfy_server)  # the server is shared: other tests' models may still be loaded
    first = _run(comfy_server, _prompt(strength=0.9))
    (gpen,) = _hosted(_report(first), "HostedGPEN")
    assert gpen["network"] == "GPEN" and gpen["load_device"] == "cpu" and gpen["weight_devices"] == ["cpu"]
    assert gpen["size_bytes"] == gpen["loaded_bytes"] > 30 * MiB  # counted, fully loaded (GPEN-BFR-256)
    assert gpen["derived_tensors"] > 0  # the run used the weight-derived caches
    assert gpen["workspace_bytes"] > 0  # ... and kept its CPU activation buffers for the next run

    after = _unload_all(comfy_server)
    (net,) = after["gpen_networks"]  # still cached by the loader node, but no longer loaded...
    assert net["derived_tensors"] == 0  # ...and nothing derived from its weights is kept
    assert net["workspace_bytes"] == 0  # nor the CPU buffers, which ComfyUI does not count

    again = _run(comfy_server, _prompt(strength=0.9))  # loaded back on the next run
    assert len(_hosted(_report(again), "HostedGPEN")) == 1
    assert np.array_equal(_saved(comfy_server, again), _saved(comfy_server, first))


def test_detector_and_parser_are_loaded_models_too(comfy_server):
    # Seeded random RetinaFace / ParseNet weights (host_utils.prepare_base): they find meaningless
    # faces; at the lowest threshold "largest" keeps exactly one, which is enough to run all three.
    _unload_all(comfy_server)  # the server is shared: other tests' models may still be loaded
    entry = _run(comfy_server, _prompt(face_mode="detect", detector="retinaface_mobile0.25",
                                       detection_threshold=0.05, face_selection="largest", face_parsing=True))
    assert entry["outputs"]["3"]["gpen_faces"] == [1]
    report = _report(entry)
    classes = sorted(m["class"] for m in report["models"])
    assert classes == ["HostedGPEN", "HostedParseNet", "HostedRetinaFace"], classes
    for m in report["models"]:
        assert m["size_bytes"] == m["loaded_bytes"] > 0 and m["weight_devices"] == ["cpu"]
    assert not _unload_all(comfy_server)["models"]


def test_many_runs_keep_one_patcher_and_bounded_memory(comfy_server):
    """25 runs in one server: one GPEN entry in the host's table, resident memory grows by at most
    ~50 MB (a leak of one preview, crop or derived tensor set per run would exceed it)."""
    _unload_all(comfy_server)  # the server is shared: other tests' models may still be loaded
    for i in range(3):  # warm-up: first allocations, caches, lazy imports
        _run(comfy_server, _prompt(strength=0.3 + 0.01 * i))
    before = comfy_server.get("/gpen_test/memory")["rss"]
    for i in range(25):  # a new strength each time, so ComfyUI's cache cannot skip the run
        report = _report(_run(comfy_server, _prompt(strength=0.5 + 0.01 * i)))
        assert len(_hosted(report, "HostedGPEN")) == 1
    grown = comfy_server.get("/gpen_test/memory")["rss"] - before
    print(f"{comfy_server.host}: resident memory {before / MiB:.0f} MiB, grown by {grown / MiB:.1f} MiB over 25 runs")
    assert grown <= 50 * MiB, f"resident memory grew by {grown / MiB:.1f} MiB over 25 runs"
