"""The pack beside another face pack in the real ComfyUI host, and detect mode end to end (issue 19).

One headless server with its own ``custom_nodes``: this pack, and a stand-in for ReActor /
facerestore_cf that registers ``facerestore_models`` exactly as they do, with ComfyUI's shared
``supported_pt_extensions`` set. Weights: two seeded GPEN-BFR-256 checkpoints and a seeded
RetinaFace-R50 (random weights of the real layout: it finds "faces" anywhere, which is all a test
of the host path needs; the restored pixels are compared with the core's own result). Runs in
every host version (``host_utils.host_versions``); skipped, like the other host tests, when a host
is not available (a failure under ``$GPEN_REQUIRE_HOST=1``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import host_utils as H
from conftest import host_or_skip

STANDIN = '''
import logging, os
import folder_paths

# what ReActor (and facerestore_cf) do when they load: the entry gets ComfyUI's own shared set
_dir = os.path.join(folder_paths.models_dir, "facerestore_models")
os.makedirs(_dir, exist_ok=True)
folder_paths.folder_names_and_paths["facerestore_models"] = ([_dir], folder_paths.supported_pt_extensions)
logging.info("face-pack stand-in: registered facerestore_models with supported_pt_extensions")
NODE_CLASS_MAPPINGS = {}
'''
INPUT = "neighbours_input.png"
MODELS = ("GPEN-A-seeded.pth", "GPEN-B-seeded.pth")


@pytest.fixture(scope="module", params=H.host_versions(), ids=lambda v: f"comfyui-{v}")
def host(request, tmp_path_factory):
    comfy = host_or_skip(request.param)
    from gpen.faces.detect import RETINAFACE_MODELS, build_retinaface
    from gpen.model.layouts import seeded_state_dict
    from skimage.data import astronaut

    base = H.make_base_dir(tmp_path_factory.mktemp("neighbours_" + request.param.replace(".", "_")))
    (base / "custom_nodes" / "face_pack_standin").mkdir()
    (base / "custom_nodes" / "face_pack_standin" / "__init__.py").write_text(STANDIN)
    models = base / "models"
    for seed, name in enumerate(MODELS, start=1):
        torch.save(seeded_state_dict("GPEN-BFR-256", seed=seed), models / "facerestore_models" / name)
    (models / "facerestore_models" / "other_pack_model.onnx").write_bytes(b"listed only")
    for folder in ("checkpoints", "loras", "upscale_models", "vae"):
        (models / folder).mkdir(parents=True, exist_ok=True)
        (models / folder / "not_a_model.onnx").write_bytes(b"never listed by core loaders")
        (models / folder / "model.safetensors").write_bytes(b"listed")
    torch.manual_seed(0)
    net = build_retinaface(RETINAFACE_MODELS["retinaface_resnet50"][0], "cpu")
    detector_file = models / "facedetection" / RETINAFACE_MODELS["retinaface_resnet50"][1]
    torch.save(net.state_dict(), detector_file)
    Image.fromarray(astronaut()).crop((96, 0, 352, 256)).save(base / "input" / INPUT)
    server = H.ComfyServer(comfy, base, env={"GPEN_OFFLINE": "1", "GPEN_TUNE_MALLOC": "1"}).start()
    server.object_info = server.get("/object_info")
    server.detector_file = detector_file
    yield server
    server.stop()


def _options(info: dict, node: str, name: str) -> list:
    spec = info[node]["input"]["required"][name]
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def test_core_loaders_never_list_onnx_files(host):
    """ReActor-style registration shares ComfyUI's extension set: adding .onnx to it in place made
    every core loader list .onnx files."""
    assert "face-pack stand-in: registered" in host.log()
    folders = (("CheckpointLoaderSimple", "ckpt_name", "checkpoints"), ("LoraLoader", "lora_name", "loras"),
               ("UpscaleModelLoader", "model_name", "upscale_models"), ("VAELoader", "vae_name", "vae"))
    for round_ in range(2):  # the nodes merge the folders again whenever they list files
        info = host.get("/object_info")
        for node, name, folder in folders:
            options = _options(info, node, name)
            assert "model.safetensors" in options and "not_a_model.onnx" not in options, (node, options)
            # a new file makes ComfyUI list the folder again (its file-list cache hid the bug otherwise)
            (host.base_dir / "models" / folder / f"added_{round_}.safetensors").write_bytes(b"listed")
        gpen_options = _options(info, "GPENModelLoader", "model_name")
        assert {"other_pack_model.onnx", *MODELS} <= set(gpen_options)
    listed = host.get("/models/checkpoints")
    assert "added_1.safetensors" in listed and "not_a_model.onnx" not in listed


def _restore_prompt(model: str, strength: float = 1.0, node: str = "3", save_crops: bool = True,
                    face_mode: str = "detect") -> dict:
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": INPUT}},
        f"{node}0": {"class_type": "GPENModelLoader", "inputs": {"model_name": model, "precision": "fp32"}},
        node: {"class_type": "GPENFaceRestore",
               "inputs": {"image": ["1", 0], "gpen_model": [f"{node}0", 0], "face_mode": face_mode,
                          "strength": strength, "face_selection": "largest"}},
        f"{node}1": {"class_type": "SaveImage", "inputs": {"images": [node, 0], "filename_prefix": f"n{node}"}},
    }
    if save_crops:
        prompt[f"{node}2"] = {"class_type": "SaveImage", "inputs": {"images": [node, 2],
                                                                    "filename_prefix": f"n{node}_crops"}}
    return prompt


def _saved(host, entry: dict, node_id: str) -> np.ndarray:
    (f,) = H.output_files(entry, node_id)
    return np.asarray(Image.open(host.base_dir / "output" / f.get("subfolder", "") / f["filename"]).convert("RGB"))


def _as_saved(t: torch.Tensor) -> np.ndarray:
    """What ComfyUI's SaveImage writes for an image tensor (H, W, 3) 0..1: 255 * x, clipped, truncated."""
    return np.clip(255.0 * t.numpy(), 0, 255).astype(np.uint8)


def _core_result(host, model: str, strength: float = 1.0):
    import gpen
    from gpen.faces.detect import FaceDetector

    img = np.asarray(Image.open(host.base_dir / "input" / INPUT).convert("RGB")).astype(np.float32) / 255.0
    net = gpen.load_model(host.base_dir / "models" / "facerestore_models" / model)
    detector = FaceDetector("retinaface_resnet50", weights_path=host.detector_file)
    return gpen.FaceRestorer(net, detector=detector).restore(torch.from_numpy(img)[None], strength=strength,
                                                             face_selection="largest"), img


def test_detect_mode_restores_a_face_inside_the_host(host):
    entry = host.run(_restore_prompt(MODELS[0]), timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    image, crop = _saved(host, entry, "31"), _saved(host, entry, "32")
    expected, src = _core_result(host, MODELS[0])
    assert len(expected.faces) == 1
    assert np.abs(image.astype(int) - _as_saved(expected.images[0]).astype(int)).max() <= 1
    assert np.abs(crop.astype(int) - _as_saved(expected.crops[0]).astype(int)).max() <= 1
    changed = np.abs(image.astype(int) - _as_saved(torch.from_numpy(src)).astype(int)).max(-1) > 8
    assert changed.mean() > 0.05  # a face was restored, not only passed through


def test_two_models_share_one_detector(host):
    """Two restore nodes with different models: the detector is loaded once for the process, not on
    every switch between the models."""
    prompt = {**_restore_prompt(MODELS[0], 0.9, node="5", save_crops=False),
              **_restore_prompt(MODELS[1], 0.9, node="6", save_crops=False)}
    for strength in (0.9, 0.8):
        prompt["5"]["inputs"]["strength"] = prompt["6"]["inputs"]["strength"] = strength
        entry = host.run(prompt, timeout=300)
        assert entry["status"]["status_str"] == "success", entry["status"]
    loads = [line for line in host.log().splitlines() if "loaded retinaface_resnet50" in line]
    assert len(loads) == 1, loads


def test_face_crops_connected_later_are_real_crops(host):
    """face_crops is only kept when a node takes it; connecting it afterwards re-runs the node
    instead of serving the cached placeholder."""
    first = host.run(_restore_prompt(MODELS[1], 0.7, node="7", save_crops=False, face_mode="aligned"), timeout=300)
    assert first["status"]["status_str"] == "success", first["status"]
    second = host.run(_restore_prompt(MODELS[1], 0.7, node="7", save_crops=True, face_mode="aligned"), timeout=300)
    assert second["status"]["status_str"] == "success", second["status"]
    crop = _saved(host, second, "72")
    import gpen

    img = np.asarray(Image.open(host.base_dir / "input" / INPUT).convert("RGB")).astype(np.float32) / 255.0
    net = gpen.load_model(host.base_dir / "models" / "facerestore_models" / MODELS[1])
    expected = gpen.FaceRestorer(net).restore_aligned(torch.from_numpy(img)[None], strength=0.7)
    assert crop.max() > 0  # not the black placeholder
    assert np.abs(crop.astype(int) - _as_saved(expected.crops[0]).astype(int)).max() <= 1


def test_tune_malloc_setting_takes_effect_in_the_host(host):
    assert "GPEN_TUNE_MALLOC=1: glibc allocator tuned" in host.log()
