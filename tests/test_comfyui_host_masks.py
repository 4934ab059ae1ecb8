"""The restore node's regions / occlusion / upscale inputs inside the real ComfyUI 0.8.0 host.

A server of its own (the ``host`` fixture of tests/test_comfyui_host.py, module scope), with a tiny
RealESRGAN-Compact 4x upscale model whose last convolution is zero, so core's "Load Upscale Model"
loads it and its output is exactly the nearest-neighbour 4x of its input. Detector weights are
absent (``GPEN_OFFLINE``), so detect mode runs on images below the detector's minimum side.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

import host_utils as H
from test_comfyui_host import CHECKPOINT, INPUT_IMAGE, host  # noqa: F401 (the fixture)

from gpen.pipeline.frames import resize_images

TINY = "gpen_host_tiny_upscale.png"
UPSCALER = "tiny_compact_4x.pth"


def _prompt(image: str, prefix: str, **restore) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "GPENModelLoader", "inputs": {"model_name": CHECKPOINT, "precision": "auto"}},
        "3": {"class_type": "GPENFaceRestore", "inputs": {"image": ["1", 0], "gpen_model": ["2", 0],
                                                          "face_mode": "detect", "strength": 1.0, **restore}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
        "5": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 1]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": prefix + "_mask"}},
    }


def _saved(host, entry: dict, node_id: str) -> np.ndarray:  # noqa: F811 (host is the fixture)
    (f,) = H.output_files(entry, node_id)
    return np.asarray(Image.open(host.base_dir / "output" / f.get("subfolder", "") / f["filename"]).convert("RGB"))


def _ok(entry: dict) -> dict:
    assert entry["status"]["status_str"] == "success", [
        m[1].get("exception_message") for m in entry["status"]["messages"] if "error" in m[0]]
    return entry


def _tiny(host) -> np.ndarray:  # noqa: F811
    pixels = np.random.default_rng(11).integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(host.base_dir / "input" / TINY)
    return pixels


def test_schema_of_the_new_inputs(host):  # noqa: F811
    spec = host.object_info["GPENFaceRestore"]
    optional = spec["input"]["optional"]
    assert optional["regions"][0] == "STRING"
    assert optional["regions"][1]["default"] == "skin,brows,eyes,glasses,ears,nose,mouth,lips"
    assert optional["occlusion"][1]["options"] == ["none", "xseg_1", "xseg_2", "xseg_3", "all"]
    assert optional["occlusion"][1]["default"] == "none"
    assert (optional["upscale"][0], optional["upscale"][1]["min"], optional["upscale"][1]["max"],
            optional["upscale"][1]["default"]) == ("INT", 1, 4, 1)
    assert optional["upscale_model"][0] == "UPSCALE_MODEL"
    # new widgets come after the old ones, so saved workflows keep their widget values (inputs added
    # later follow them: tests/test_comfyui_host.py checks the whole saved order)
    widgets = [name for name, _ in H.widget_inputs(spec)]
    i = widgets.index("regions")
    assert widgets[i:i + 3] == ["regions", "occlusion", "upscale"] and widgets.index("face_batch_size") < i


def test_upscale_2_without_faces_is_the_resized_input(host):  # noqa: F811
    pixels = _tiny(host)
    entry = _ok(host.run(_prompt(TINY, "gpen_up2", upscale=2)))
    out = _saved(host, entry, "4")
    expected = resize_images(torch.from_numpy(pixels.astype(np.float32) / 255)[None], (24, 20))[0].numpy()
    assert out.shape == (24, 20, 3)
    assert np.abs(out / 255.0 - expected).max() <= 1 / 255 + 1e-5  # SaveImage truncates to 8 bits
    mask = _saved(host, entry, "6")
    assert mask.shape == (24, 20, 3) and not mask.any()


def test_upscale_model_runs_through_the_host_and_is_resized_to_the_scale(host):  # noqa: F811
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=4, num_conv=1, upscale=4)
    last = net.body[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)  # output = nearest 4x of the input, exactly
    folder = host.base_dir / "models" / "upscale_models"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / UPSCALER)
    pixels = _tiny(host)
    prompt = _prompt(TINY, "gpen_up_model", upscale=2, upscale_model=["7", 0])
    prompt["7"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": UPSCALER}}
    out = _saved(host, _ok(host.run(prompt)), "4")
    src = torch.from_numpy(pixels.astype(np.float32) / 255)[None]
    nearest4 = src.repeat_interleave(4, 1).repeat_interleave(4, 2)
    expected = resize_images(nearest4, (24, 20))[0].numpy()  # 4x model, then exactly 2x
    assert out.shape == (24, 20, 3)
    assert np.abs(out / 255.0 - expected).max() <= 1 / 255 + 1e-5
    plain = resize_images(src, (24, 20))[0].numpy()
    assert np.abs(expected - plain).max() > 0.1  # the model's output, not the built-in resize


def test_aligned_mode_upscale_matches_core(host):  # noqa: F811
    prompt = _prompt(INPUT_IMAGE, "gpen_aligned_up2", upscale=2)
    prompt["3"]["inputs"]["face_mode"] = "aligned"
    out = _saved(host, _ok(host.run(prompt)), "4").astype(np.float32) / 255.0
    import gpen

    net = gpen.load_model(host.base_dir / "models" / "facerestore_models" / CHECKPOINT)
    src = torch.from_numpy(np.asarray(Image.open(host.base_dir / "input" / INPUT_IMAGE).convert("RGB"),
                                      dtype=np.float32) / 255.0)[None]
    expected = gpen.FaceRestorer(net).restore_aligned(src, upscale=2).images[0].numpy()
    assert out.shape == expected.shape == (512, 512, 3)
    assert np.abs(out - expected).max() <= 1 / 255 + 1e-4


def test_regions_without_face_parsing_is_a_node_error(host):  # noqa: F811
    _tiny(host)
    entry = host.run(_prompt(TINY, "gpen_regions_off", regions="skin,eyes"))
    assert entry["status"]["status_str"] == "error"
    (err,) = H.status_messages(entry, "execution_error")
    assert err["node_type"] == "GPENFaceRestore" and "face parsing" in err["exception_message"]
    assert "Traceback" not in err["exception_message"]
