"""FaceRestorer blend masks: face-parsing regions and XSeg occlusion, end to end.

The face is placed so that its alignment is the identity (its landmarks are the template's), so a
crop pixel is the image pixel at the same place and the stand-ins' known layouts (a grid of parsing
classes, an occluded square) can be checked directly in the output image. The restorer darkens
every face pixel it gets, so anything restored shows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gpen
from gpen.errors import InvalidInputError
from gpen.faces.align import template_points
from gpen.faces.occlusion import FaceOccluder, load_xseg
from gpen.faces.parsing import BISENET_LABELS, PARSENET_LABELS, FaceParser, region_parts
from gpen.faces.paste import feather_mask

from stand_ins import GridParserNet, interior

S = 512


def darken(x: torch.Tensor) -> torch.Tensor:
    return x * 0.5 - 0.5  # 0..1 value v comes back as v / 2


def _image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, 32, 32, generator=g) * 0.8 + 0.2
    return torch.nn.functional.interpolate(small, size=(S, S), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)


def _identity_face() -> list[np.ndarray]:
    return [template_points("gpen", S)[None].astype(np.float32)]


@pytest.mark.parametrize("model, labels", [("parsenet", PARSENET_LABELS), ("bisenet", BISENET_LABELS)])
@pytest.mark.parametrize("regions", ["eyes,teeth", "skin,nose", "hair,lips"])
def test_only_the_chosen_regions_change(model, labels, regions):
    img = _image()
    parser = FaceParser(model, net=GridParserNet(labels), blur_sigma=2.0)
    res = gpen.FaceRestorer(darken, size=S, parser=parser).restore(img, _identity_face(), parsing=True,
                                                                   regions=regions)
    assert np.allclose(res.faces[0].affine, [[1, 0, 0], [0, 1, 0]], atol=1e-4)
    chosen = set(region_parts(model, regions))
    for name, rows, cols in GridParserNet.cells():
        r, c = interior(rows, cols, 14)
        out, src = res.images[0, r, c], img[0, r, c]
        if name in chosen:
            assert (src - out).min() > 0.09, name  # darkened: v -> v / 2 with v >= 0.2
        else:
            assert torch.equal(out, src), name  # bit-identical
    changed = (res.images[0] != img[0]).any(-1)
    assert torch.equal(changed, res.masks[0] > 0) or bool((res.masks[0][changed] > 0).all())


def test_default_regions_are_todays_mask():
    img = _image(1)
    parser = FaceParser("parsenet", net=GridParserNet(PARSENET_LABELS), blur_sigma=2.0)
    r = gpen.FaceRestorer(darken, size=S, parser=parser)
    default = r.restore(img, _identity_face(), parsing=True)
    named = r.restore(img, _identity_face(), parsing=True, regions="skin,brows,eyes,glasses,ears,nose,mouth,lips")
    assert torch.equal(default.images, named.images) and torch.equal(default.masks, named.masks)
    with pytest.raises(InvalidInputError, match="face parsing"):
        r.restore(img, _identity_face(), regions="eyes")  # parsing off
    with pytest.raises(InvalidInputError, match="beard"):
        r.restore(img, _identity_face(), parsing=True, regions="beard")


def _occluder(tmp_path) -> FaceOccluder:
    import xseg_graphs as X

    return FaceOccluder("xseg_1", graphs={"xseg_1": load_xseg(X.square_graph(tmp_path / "xseg_1.onnx"))})


def test_occluded_square_stays_bit_identical(tmp_path):
    pytest.importorskip("onnxruntime")
    import xseg_graphs as X

    img = _image(2)
    r = gpen.FaceRestorer(darken, size=S, occluder=_occluder(tmp_path))
    plain = r.restore(img, _identity_face())
    occluded = r.restore(img, _identity_face(), occlusion="xseg_1")
    lo, hi = (2 * v for v in X.SQUARE)  # the 256-px square at 512
    inside = (0, slice(lo + 5, hi - 5), slice(lo + 5, hi - 5))
    assert torch.equal(occluded.images[inside], img[inside])
    assert torch.all(occluded.masks[inside] == 0)
    assert (img[inside] - plain.images[inside]).min() > 0.09  # without occlusion the square is restored
    ring = (0, slice(lo - 60, lo - 20), slice(lo, hi))  # visible face around the square
    assert torch.equal(occluded.images[ring], plain.images[ring])
    # the blend mask is min(paste mask, occlusion mask)
    expected = torch.minimum(feather_mask(S), r.occluder(("xseg_1",), torch.device("cpu")).masks(
        torch.from_numpy(np.ascontiguousarray(img[0].permute(2, 0, 1).numpy()))[None])[0])
    assert (occluded.masks[0] - expected).abs().max() < 2e-3  # identity warp: up to resampling


def test_occlusion_bounds_the_parsing_mask(tmp_path):
    pytest.importorskip("onnxruntime")
    import xseg_graphs as X

    img = _image(3)
    parser = FaceParser("parsenet", net=GridParserNet(PARSENET_LABELS), blur_sigma=2.0)
    r = gpen.FaceRestorer(darken, size=S, parser=parser, occluder=_occluder(tmp_path))
    parsed = r.restore(img, _identity_face(), parsing=True, regions="skin,eyes,nose,hair,mouth,lips,ears")
    both = r.restore(img, _identity_face(), parsing=True, regions="skin,eyes,nose,hair,mouth,lips,ears",
                     occlusion="xseg_1")
    assert torch.all(both.masks <= parsed.masks + 1e-6)
    lo, hi = (2 * v for v in X.SQUARE)
    inside = (0, slice(lo + 5, hi - 5), slice(lo + 5, hi - 5))
    assert torch.equal(both.images[inside], img[inside]) and not torch.equal(parsed.images[inside], img[inside])
    with pytest.raises(InvalidInputError, match="xseg_7"):
        r.restore(img, _identity_face(), occlusion="xseg_7")


def test_occluder_file_is_found_in_the_detector_folders(tmp_path):
    pytest.importorskip("onnxruntime")
    import xseg_graphs as X

    folder = tmp_path / "facedetection"
    folder.mkdir()
    X.square_graph(folder / "xseg_2.onnx")
    img = _image(4)
    r = gpen.FaceRestorer(darken, size=S)
    res = r.restore(img, _identity_face(), occlusion="xseg_2", detector_dirs=[folder], allow_download=False)
    lo, hi = (2 * v for v in X.SQUARE)
    inside = (0, slice(lo + 5, hi - 5), slice(lo + 5, hi - 5))
    assert torch.equal(res.images[inside], img[inside])
    again = r.restore(img, _identity_face(), occlusion=["xseg_2"], detector_dirs=[folder], allow_download=False)
    assert torch.equal(again.images, res.images)
    cpu = torch.device("cpu")
    assert r.occluder(("xseg_2",), cpu, [folder], False) is r.occluder(("xseg_2",), cpu, [folder], False)
