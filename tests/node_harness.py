"""Runs ``GPENFaceRestore.execute`` inside ComfyUI's real modules (``comfy``, ``comfy_api``), in its own process.

``python tests/node_harness.py COMFYUI_DIR`` loads ComfyUI's modules on the CPU, imports this pack
the way ComfyUI does (as a package, nodes imported relatively), runs the cases below and prints
one JSON object. tests/test_node_execute.py starts it, so ComfyUI's modules (its top-level
``nodes`` among them) never enter the test process. A stand-in detector (the faces' real
landmarks) is handed to the node's restorer, so detect mode runs without detector weights.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _load_pack(comfy_dir: str):
    sys.path.insert(0, comfy_dir)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    spec = importlib.util.spec_from_file_location("gpen_pack_under_test", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pack
    spec.loader.exec_module(pack)
    nodes = "gpen_pack_under_test.nodes"
    return sys.modules[f"{nodes}.face_restore"], sys.modules[f"{nodes}.model_loader"]


def main() -> None:
    node_mod, loader_mod = _load_pack(sys.argv[1])
    sys.path.insert(0, str(REPO / "tests"))
    from comfy import model_management

    from conftest import astronaut, landmarks_of
    from gpen_pack_under_test.gpen import FaceRestorer, load_model
    from gpen_pack_under_test.gpen.faces.detect import Detections, FaceDetector, detection_memory_bytes
    from gpen_pack_under_test.gpen.model.layouts import seeded_state_dict
    from gpen_pack_under_test.gpen.model.network import GPENConfig

    net = load_model(seeded_state_dict(GPENConfig(size=64, style_dim=32, n_mlp=2, narrow=0.0625), seed=3))
    model = loader_mod.GPENModel(net, "seeded.pth", "seeded.pth", "fp32", torch.float32)
    node = node_mod.GPENFaceRestore
    requested: list[int] = []
    real_free = model_management.free_memory

    def free_memory(memory_required, device, *args, **kwargs):
        requested.append(int(memory_required))
        return real_free(memory_required, device, *args, **kwargs)

    model_management.free_memory = free_memory
    lm = landmarks_of("skimage.data.astronaut")[0]
    faces_at = {}  # frame size -> landmarks the stand-in detector reports

    def backend(images, threshold):
        lms = faces_at.get(tuple(images.shape[1:3]), np.zeros((0, 5, 2), np.float32))
        boxes = np.array([[m[:, 0].min() - 30, m[:, 1].min() - 40, m[:, 0].max() + 30, m[:, 1].max() + 30]
                          for m in lms], np.float32).reshape(-1, 4)
        return [Detections.from_arrays(boxes, np.full(len(lms), 0.9, np.float32), lms) for _ in images]

    def restorer_with_stand_in_detector(restorer, *args, **kwargs):
        kwargs.pop("detector", None)
        return FaceRestorer(restorer, *args, detector=FaceDetector(backend=backend), **kwargs)

    node_mod.FaceRestorer = restorer_with_stand_in_detector  # what the node builds its restorer with
    out: dict = {}

    # an empty IMAGE batch passes through, in both modes
    for mode in ("detect", "aligned"):
        res = node.execute(torch.zeros(0, 32, 48, 3), model, mode, 1.0)
        out[f"empty_{mode}"] = [list(res.args[0].shape), list(res.args[1].shape), list(res.args[2].shape), res.args[3]]

    # "by index" without indices: refused before any memory is freed or a face is detected
    requested.clear()
    try:
        node.execute(astronaut(), model, "detect", 1.0, face_selection="by index", face_indices=" ")
        out["empty_indices"] = "no error"
    except Exception as exc:  # noqa: BLE001 - the message is the result
        out["empty_indices"] = f"{type(exc).__name__}: {exc}"
    out["empty_indices_requested"] = list(requested)

    # memory asked of ComfyUI: detect mode counts the detector
    frames = torch.zeros(3, 1080, 1920, 3)
    requested.clear()
    node.execute(frames, model, "aligned", 1.0, face_batch_size=1)
    node.execute(frames, model, "detect", 1.0, detector="retinaface_resnet50", face_batch_size=1)
    out["requested"] = list(requested)
    out["detection_bytes"] = detection_memory_bytes("retinaface_resnet50", 1080, 1920, 3)
    out["network_bytes"] = int(model_management.module_size(net))

    # reference: two faces, the right one swapped; only it is restored
    img = astronaut()
    before = torch.cat([img, img], dim=2)
    after = before.clone()
    after[0, 60:260, 512 + 120:512 + 320] = after[0, 60:260, 512 + 120:512 + 320].flip(1) * 0.6
    faces_at[(512, 1024)] = np.stack([lm, lm + np.array([512.0, 0.0], np.float32)])
    res = node.execute(after, model, "detect", 1.0, reference=before)
    mask = res.args[1]
    out["reference"] = {"left_mask": float(mask[0, :, :512].sum()), "right_mask_max": float(mask[0, :, 512:].max()),
                        "left_equal": bool(torch.equal(res.args[0][0, :, :512], after[0, :, :512])),
                        "info": res.args[3]}
    res = node.execute(after, model, "detect", 1.0)
    out["no_reference_left_mask_max"] = float(res.args[1][0, :, :512].max())

    # temporal_consistency: a still, noisy clip of the astronaut; the node passes it on to the restorer,
    # and a bad value (or one with aligned crops or without tracking) is refused before any work
    faces_at[(512, 512)] = lm[None]
    noise = torch.randn(4, 512, 512, 3, generator=torch.Generator().manual_seed(4))
    clip = (img.expand(4, -1, -1, -1) + 0.03 * noise).clamp(0, 1)
    res = node.execute(clip, model, "detect", 1.0, temporal_consistency=1.0)
    direct = restorer_with_stand_in_detector(net).restore(clip, temporal_consistency=1.0)
    plain = node.execute(clip, model, "detect", 1.0)
    out["consistency"] = {"equal": bool(torch.equal(res.args[0], direct.images)),
                          "off_differs": bool(not torch.equal(res.args[0], plain.args[0])),
                          "mask_max": float(res.args[1].max())}
    for case, args, kwargs in (("consistency_range", "detect", dict(temporal_consistency=1.5)),
                               ("consistency_aligned", "aligned", dict(temporal_consistency=1.0)),
                               ("consistency_untracked", "detect", dict(temporal_consistency=1.0, track_faces=False))):
        requested.clear()
        try:
            node.execute(clip, model, args, 1.0, **kwargs)
            out[case] = "no error"
        except Exception as exc:  # noqa: BLE001 - the message is the result
            out[case] = f"{type(exc).__name__}: {exc}"
        out[case + "_requested"] = list(requested)

    # face_landmarks: offered only where the host has core's MediaPipe face nodes; faces from a payload
    # restore exactly as the same faces given to the core; a payload of another image size is refused
    optional = node.INPUT_TYPES().get("optional", {})
    out["face_landmarks_type"] = optional["face_landmarks"][0] if "face_landmarks" in optional else None
    if out["face_landmarks_type"] is not None:
        from mesh_faces import mesh_with_five_points

        face = {"landmarks_xy": mesh_with_five_points(lm, seed=5), "bbox_xyxy": np.array([150., 80., 300., 260.]),
                "score": 0.97}
        payload = {"frames": [[face]], "image_size": (512, 512), "connection_sets": {}}
        res = node.execute(img, model, "detect", 1.0, face_landmarks=payload)
        given = Detections.from_arrays(np.array([[150., 80., 300., 260.]], np.float32), np.array([0.97], np.float32),
                                       lm[None])
        direct = FaceRestorer(net).restore(img, [given])
        out["landmarks_equal"] = bool(torch.equal(res.args[0], direct.images) and torch.equal(res.args[1], direct.masks))
        out["landmarks_mask_max"] = float(res.args[1].max())
        out["landmarks_info"] = res.args[3]
        for case, args in {"landmarks_wrong_size": (torch.zeros(1, 256, 512, 3), "detect"),
                           "landmarks_aligned": (img, "aligned")}.items():
            try:
                node.execute(args[0], model, args[1], 1.0, face_landmarks=payload)
                out[case] = "no error"
            except Exception as exc:  # noqa: BLE001 - the message is the result
                out[case] = f"{type(exc).__name__}: {exc}"
    # precision "auto" on processors described by fake /proc/cpuinfo files (gpen/model/precision.py's rule)
    import tempfile

    from gpen_pack_under_test.gpen import cpuinfo

    saved = cpuinfo.CPUINFO_PATH
    out["auto_precision"] = {}
    for cpu, text in {"intel_amx": "vendor_id\t: GenuineIntel\nflags\t\t: avx512f avx512_bf16 amx_bf16\n",
                      "intel_no_amx": "vendor_id\t: GenuineIntel\nflags\t\t: avx512f avx512_bf16\n",
                      "amd_zen4": "vendor_id\t: AuthenticAMD\nflags\t\t: avx512f avx512_bf16\n",
                      "amd_zen3": "vendor_id\t: AuthenticAMD\nflags\t\t: avx2\n"}.items():
        with tempfile.NamedTemporaryFile("w", suffix="cpuinfo", delete=False) as f:
            f.write(text)
        cpuinfo.CPUINFO_PATH = f.name
        cpuinfo.cpu_facts.cache_clear()
        out["auto_precision"][cpu] = loader_mod.resolve_precision("auto", torch.device("cpu"))
        Path(f.name).unlink()
    cpuinfo.CPUINFO_PATH = saved
    cpuinfo.cpu_facts.cache_clear()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
