"""GPENFaceRestore.execute with ComfyUI's real modules (see tests/node_harness.py): empty batches, option
checks before any work, the memory asked of ComfyUI, and the reference input."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import host_utils as H

HARNESS = Path(__file__).resolve().parent / "node_harness.py"


@pytest.fixture(scope="module", params=H.host_versions(), ids=lambda v: f"comfyui-{v}")
def results(request) -> dict:
    from conftest import host_or_skip

    host = host_or_skip(request.param)  # its own python: ComfyUI's requirements live in the host's environment
    proc = subprocess.run([str(host.python), str(HARNESS), str(host.comfy_dir)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "GPEN_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_an_empty_image_batch_passes_through(results):
    for mode in ("detect", "aligned"):
        images, masks, crops, info = results[f"empty_{mode}"]
        assert images == [0, 32, 48, 3] and masks == [0, 32, 48] and crops == [1, 64, 64, 3]
        assert "empty" in info


def test_by_index_with_no_index_is_refused_before_any_work(results):
    assert results["empty_indices"].startswith("InvalidInputError") and "empty" in results["empty_indices"]
    assert results["empty_indices_requested"] == []  # nothing freed, nothing loaded, nothing detected


def test_detect_mode_asks_room_for_the_detector(results):
    aligned, detect = results["requested"]
    # the detector's weights and its working memory for the frames it sees at once come on top
    assert detect >= results["network_bytes"] + results["detection_bytes"]
    assert detect > aligned


def test_reference_input_restores_only_the_swapped_face(results):
    ref = results["reference"]
    assert ref["left_mask"] == 0 and ref["right_mask_max"] > 0.99 and ref["left_equal"]
    assert "1 face(s) left alone" in ref["info"]
    assert results["no_reference_left_mask_max"] > 0.99  # without it both faces are restored


def test_temporal_consistency_reaches_the_restorer_and_bad_values_are_refused_first(results):
    got = results["consistency"]
    assert got["equal"] and got["off_differs"] and got["mask_max"] > 0.99
    for case in ("consistency_range", "consistency_aligned", "consistency_untracked"):
        assert results[case].startswith("InvalidInputError") and "temporal_consistency" in results[case], case
        assert results[case + "_requested"] == []  # nothing freed, loaded or detected


def test_face_landmarks_input_only_where_the_host_has_the_type(results, request):
    version = request.node.callspec.params["results"]
    offered = results["face_landmarks_type"]
    if version == "0.8.0":  # no core MediaPipe nodes: the node is exactly as before
        assert offered is None
        return
    assert offered == "FACE_LANDMARKS"
    # the mesh's faces restore exactly as the same five points, box and score given to the core
    assert results["landmarks_equal"] and results["landmarks_mask_max"] > 0.99
    assert results["landmarks_wrong_size"].startswith("InvalidInputError")
    assert "1328x568" not in results["landmarks_wrong_size"] and "512x512 images" in results["landmarks_wrong_size"]
    assert "512x256" in results["landmarks_wrong_size"]
    assert results["landmarks_aligned"].startswith("InvalidInputError") and "face_mode" in results["landmarks_aligned"]


def test_precision_auto_follows_the_packs_rule_on_the_cpu(results):
    """The node's ``precision: auto`` is gpen.model.precision's rule (fake /proc/cpuinfo in the harness)."""
    assert results["auto_precision"] == {"intel_amx": "bf16", "intel_no_amx": "fp32", "amd_zen4": "bf16",
                                         "amd_zen3": "fp32"}
