"""XSeg occlusion masks (gpen.faces.occlusion) with stand-in ONNX graphs of the real interface.

The graphs (tests/xseg_graphs.py) take FaceFusion's occluder input (``input``: (batch, 256, 256, 3)
float32, BGR 0..1, NHWC) and return (batch, 256, 256, 1): a fixed mask with a covered square, or a
seeded convolution whose exact output is recomputed in torch to prove the preprocessing.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpen.errors import InvalidInputError, MissingWeightsError, ModelLoadError
from gpen.faces.occlusion import (
    OCCLUDER_MODELS,
    FaceOccluder,
    load_xseg,
    parse_occluders,
    soften_occlusion,
)
from gpen.weights import download as dl
from gpen.weights import paths
from gpen.weights.registry import REGISTRY

import xseg_graphs as X

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(autouse=True)
def _isolated_models(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ENV_MODELS_DIR, str(tmp_path / "models"))
    monkeypatch.delenv(dl.ENV_OFFLINE, raising=False)


def _crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return F.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)


def test_choices_are_parsed():
    assert parse_occluders(None) == () and parse_occluders("none") == () and parse_occluders("") == ()
    assert parse_occluders("all") == ("xseg_1", "xseg_2", "xseg_3")
    assert parse_occluders("XSEG_3, xseg_1 xseg_3") == ("xseg_3", "xseg_1")
    assert parse_occluders(["xseg_2"]) == ("xseg_2",)
    assert parse_occluders(True) == ("xseg_1",) and parse_occluders(False) == ()
    with pytest.raises(InvalidInputError, match="xseg_9"):
        parse_occluders("xseg_9")


def test_registry_has_facefusion_locations():
    for name, file_name in OCCLUDER_MODELS.items():
        spec = REGISTRY[file_name]
        release = "models-3.2.0" if name == "xseg_3" else "models-3.1.0"
        assert spec.kind == "facedetection"
        assert spec.urls[0] == f"https://github.com/facefusion/facefusion-assets/releases/download/{release}/{file_name}"
        assert f"https://huggingface.co/facefusion/{release}/resolve/main/{file_name}" in spec.urls
        assert spec.sha256 is None or len(spec.sha256) == 64


@pytest.mark.parametrize("size", [256, 512, 1024])
def test_preprocessing_is_bgr_nhwc_0_1_at_256(tmp_path, size):
    graph = load_xseg(X.conv_graph(tmp_path / "xseg_1.onnx", seed=3))
    crops = _crops(3, size)
    before = crops.clone()
    raw = FaceOccluder("xseg_1", graphs={"xseg_1": graph}).raw_masks(crops)
    assert torch.equal(crops, before)
    x = crops if size == 256 else F.interpolate(crops, size=(256, 256), mode="bilinear", align_corners=False,
                                                 antialias=True)
    expected = X.conv_reference(x.flip(1).permute(0, 2, 3, 1), seed=3)  # BGR, NHWC, 0..1
    if size != 256:
        expected = F.interpolate(expected[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    assert raw.shape == (3, size, size) and raw.dtype == torch.float32
    torch.testing.assert_close(raw, expected, rtol=0, atol=2e-6)
    # RGB instead of BGR would give a clearly different mask: the check above can fail
    wrong = X.conv_reference(x.permute(0, 2, 3, 1), seed=3)
    assert (wrong - X.conv_reference(x.flip(1).permute(0, 2, 3, 1), seed=3)).abs().max() > 0.05


def test_fixed_batch_graph_runs_face_by_face(tmp_path):
    dynamic = load_xseg(X.conv_graph(tmp_path / "a.onnx", seed=1))
    fixed = load_xseg(X.conv_graph(tmp_path / "b.onnx", seed=1, batch=1))
    assert dynamic.batch is None and fixed.batch == 1
    crops = _crops(3, 256, seed=2)
    a = FaceOccluder("xseg_1", graphs={"xseg_1": dynamic}, batch_size=2).raw_masks(crops)
    b = FaceOccluder("xseg_1", graphs={"xseg_1": fixed}).raw_masks(crops)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_several_models_take_the_minimum_then_facefusions_finish(tmp_path):
    g1 = load_xseg(X.conv_graph(tmp_path / "1.onnx", seed=1))
    g2 = load_xseg(X.conv_graph(tmp_path / "2.onnx", seed=2))
    crops = _crops(2, 512, seed=4)
    m1 = FaceOccluder("xseg_1", graphs={"xseg_1": g1}).raw_masks(crops)
    m2 = FaceOccluder("xseg_2", graphs={"xseg_2": g2}).raw_masks(crops)
    both = FaceOccluder("xseg_1,xseg_2", graphs={"xseg_1": g1, "xseg_2": g2})
    torch.testing.assert_close(both.raw_masks(crops), torch.minimum(m1, m2), rtol=0, atol=0)
    assert not torch.equal(m1, m2)
    soft = both.masks(crops)
    torch.testing.assert_close(soft, soften_occlusion(torch.minimum(m1, m2), 5.0), rtol=0, atol=1e-6)


def test_soften_maps_half_and_below_to_exactly_zero():
    m = torch.ones(1, 64, 64)
    m[:, 16:48, 16:48] = 0
    soft = soften_occlusion(m, 2.0)
    assert torch.all(soft[:, 20:44, 20:44] == 0)  # inside the covered square
    assert soft[:, :8, :].min() > 1 - 1e-6 and soft.min() >= 0 and soft.max() <= 1
    # the value at the square's edge is (blur 0.5) -> 0, so the visible region does not grow into it
    assert torch.all(soft[:, 32, 16:48] == 0)


def test_square_graph_covers_its_square(tmp_path):
    occ = FaceOccluder("xseg_1", weights_paths={"xseg_1": X.square_graph(tmp_path / "xseg_1.onnx")})
    m = occ.masks(_crops(2, 512))
    lo, hi = (2 * v for v in X.SQUARE)  # the square at 512
    assert torch.all(m[:, lo + 4:hi - 4, lo + 4:hi - 4] == 0)
    assert m[:, :lo - 16, :].min() > 1 - 1e-6 and m[:, hi + 16:, :].min() > 1 - 1e-6


def test_a_graph_file_can_be_named_by_its_path(tmp_path):
    path = X.square_graph(tmp_path / "my_occluder.onnx")
    assert parse_occluders(path) == (str(path),) and parse_occluders(str(path)) == (str(path),)
    assert parse_occluders([path, "xseg_2"]) == (str(path), "xseg_2")
    m = FaceOccluder(path).masks(_crops(1, 512))
    lo, hi = (2 * v for v in X.SQUARE)
    assert torch.all(m[:, lo + 4:hi - 4, lo + 4:hi - 4] == 0)
    with pytest.raises(InvalidInputError, match="not found: .*missing.onnx"):
        parse_occluders(str(tmp_path / "missing.onnx"))


def test_files_are_found_in_the_folders(tmp_path):
    folder = tmp_path / "facedetection_extra"
    folder.mkdir()
    X.square_graph(folder / "xseg_2.onnx")
    occ = FaceOccluder("xseg_2", extra_dirs=[folder], allow_download=False)
    assert occ.models == ("xseg_2",) and occ.masks(_crops(1, 256)).shape == (1, 256, 256)


def test_missing_file_names_file_folder_and_url():
    with pytest.raises(MissingWeightsError) as err:
        FaceOccluder("xseg_3", allow_download=False)
    msg = str(err.value)
    assert "xseg_3.onnx" in msg and str(paths.models_dir("facedetection")) in msg
    assert "models-3.2.0/xseg_3.onnx" in msg


def test_without_onnxruntime_the_error_names_the_pip_command(tmp_path, monkeypatch):
    path = X.square_graph(tmp_path / "xseg_1.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModelLoadError, match="pip install onnxruntime") as err:
        FaceOccluder("xseg_1", weights_paths={"xseg_1": path})
    assert "xseg_1.onnx" in str(err.value)


def test_wrong_graphs_and_files_are_clear_errors(tmp_path):
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 256, 256])  # NCHW: not XSeg
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 256, 256])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g", [inp],
                                                [out]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "nchw.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ModelLoadError, match="not an occluder graph"):
        load_xseg(tmp_path / "nchw.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not a graph at all")
    with pytest.raises(ModelLoadError, match="broken.onnx"):
        load_xseg(tmp_path / "broken.onnx")
    occ = FaceOccluder("xseg_1", graphs={"xseg_1": load_xseg(X.square_graph(tmp_path / "ok.onnx"))})
    for bad in (torch.zeros(1, 256, 256, 3), torch.zeros(1, 3, 256, 128), torch.zeros(1, 3, 64, 64, dtype=torch.uint8)):
        with pytest.raises(InvalidInputError, match=r"\(N, 3, S, S\)"):
            occ.masks(bad)
    with pytest.raises(InvalidInputError, match="at least one"):
        FaceOccluder("none")
    assert np.isfinite(occ.masks(torch.zeros(0, 3, 64, 64)).numpy()).all()
