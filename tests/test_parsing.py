"""Face parsing masks (gpen.faces.parsing) without real parsing weights.

The label tables are checked against facexlib's documented class orders (hard-coded here from
facexlib 0.3.0's inference scripts), the mask pipeline against crafted logits, and the real
facexlib networks (seeded random weights) for shapes, range, normalisation and batching.
ParseNet is slow on a CPU (seconds per crop), so most network tests use BiSeNet.
"""

from __future__ import annotations

import math
import socket

import pytest
import torch

from gpen.weights import download as dl
from gpen.weights import registry
from gpen.weights import paths

from stand_ins import GridParserNet, interior
from gpen.errors import InvalidInputError, MissingWeightsError, ModelLoadError
from gpen.faces.parsing import (
    BISENET_LABELS,
    DEFAULT_REGIONS,
    FACE_PARTS,
    PARSENET_LABELS,
    REGIONS,
    FaceParser,
    blur_mask,
    build_parsing_net,
    label_indices,
    labels_to_mask,
    logits_to_mask,
    parse_regions,
    region_parts,
    soften_mask,
)

# Face classes per facexlib's inference scripts (ParseNet: inference_parsing_parsenet.py, BiSeNet:
# inference_parsing.py): skin, brows, eyes, glasses, ears, nose, mouth, lips.
PARSENET_FACE = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
BISENET_FACE = {1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13}
PARSENET_NOT_FACE = {"background": 0, "hair": 13, "hat": 14, "ear_r": 15, "neck_l": 16, "neck": 17, "cloth": 18}
BISENET_NOT_FACE = {"background": 0, "ear_r": 9, "neck": 14, "neck_l": 15, "cloth": 16, "hair": 17, "hat": 18}


@pytest.fixture(autouse=True)
def _isolated_models(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ENV_MODELS_DIR, str(tmp_path / "models"))
    monkeypatch.delenv(dl.ENV_OFFLINE, raising=False)


@pytest.fixture(scope="module")
def bisenet():
    torch.manual_seed(0)
    return build_parsing_net("bisenet")


def _crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, size // 16, size // 16, generator=g)
    return torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------- labels -> mask


def test_label_tables_follow_facexlib_orders():
    assert len(PARSENET_LABELS) == len(BISENET_LABELS) == 19
    for name, idx in PARSENET_NOT_FACE.items():
        assert PARSENET_LABELS[idx] == name
    for name, idx in BISENET_NOT_FACE.items():
        assert BISENET_LABELS[idx] == name
    assert set(label_indices(PARSENET_LABELS, FACE_PARTS)) == PARSENET_FACE
    assert set(label_indices(BISENET_LABELS, FACE_PARTS)) == BISENET_FACE


@pytest.mark.parametrize("labels, face", [(PARSENET_LABELS, PARSENET_FACE), (BISENET_LABELS, BISENET_FACE)])
def test_crafted_logits_map_to_face_mask(labels, face):
    # Pixel (r, c) has winning class c; other classes get lower, varied scores.
    n, c, h = 2, 19, 3
    logits = torch.randn(n, c, h, c) * 0.1
    cls = torch.arange(c)
    logits[:, cls, :, cls] = 5.0
    mask = logits_to_mask(logits, label_indices(labels, FACE_PARTS))
    assert mask.shape == (n, h, c) and mask.dtype == torch.float32
    expected = torch.tensor([1.0 if k in face else 0.0 for k in range(c)])
    assert torch.equal(mask, expected.expand(n, h, c))


def test_labels_to_mask_with_custom_parts():
    label_map = torch.tensor([[[0, 1, 13, 17]]])
    keep = label_indices(PARSENET_LABELS, ["hair", "neck"])
    assert torch.equal(labels_to_mask(label_map, keep), torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]))


def test_unknown_part_is_rejected():
    with pytest.raises(InvalidInputError, match="beard"):
        label_indices(PARSENET_LABELS, ["skin", "beard"])


# ---------------------------------------------------------------- softening


def test_soften_mask_is_smooth_bounded_and_zero_at_edges():
    hard = torch.zeros(1, 128, 128)
    hard[:, 32:96, 32:96] = 1.0
    soft = soften_mask(hard, sigma=4.0, edge=6)
    assert soft.shape == hard.shape
    assert soft.min() >= 0 and soft.max() <= 1
    assert torch.all(soft[:, 0, :] == 0) and torch.all(soft[:, -1, :] == 0)
    assert torch.all(soft[:, :, 0] == 0) and torch.all(soft[:, :, -1] == 0)
    assert soft[0, 64, 64] > 0.999 and soft[0, 10, 10] < 1e-3  # interior kept, far outside empty
    # A hard 0/1 step becomes a ramp: neighbouring pixels differ by at most the Gaussian's peak
    # (1% slack for the kernel's truncation at 3 sigma).
    max_step = 1 / (4.0 * math.sqrt(2 * math.pi))
    assert (soft[:, :, 1:] - soft[:, :, :-1]).abs().max() <= 1.01 * max_step
    # The square's edge lies between columns 31 and 32: half height there, Phi(0.5 / sigma) just inside.
    assert (soft[0, 64, 31] + soft[0, 64, 32]).item() / 2 == pytest.approx(0.5, abs=1e-3)
    assert soft[0, 64, 32].item() == pytest.approx(0.5 * (1 + math.erf(0.5 / 4.0 / math.sqrt(2))), abs=2e-3)


def test_blur_preserves_mass_away_from_borders():
    hard = torch.zeros(2, 96, 96)
    hard[0, 40:50, 40:60] = 1.0
    hard[1, 30:31, 30:31] = 1.0
    blurred = blur_mask(hard, sigma=3.0)
    torch.testing.assert_close(blurred.sum(dim=(1, 2)), hard.sum(dim=(1, 2)), rtol=1e-4, atol=1e-4)


def test_blur_rejects_bad_shapes():
    with pytest.raises(InvalidInputError, match=r"\(N, H, W\)"):
        blur_mask(torch.zeros(8, 8))
    with pytest.raises(InvalidInputError, match="too large"):
        blur_mask(torch.zeros(1, 16, 16), sigma=10.0)


# ---------------------------------------------------------------- FaceParser with a scripted network


class _ScriptedNet(torch.nn.Module):
    """Records its input and returns logits with a fixed layout (rows: hair / skin square / cloth)."""

    def __init__(self, labels):
        super().__init__()
        self.labels = labels
        self.inputs = []
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        self.inputs.append(x.clone())
        n, _, h, w = x.shape
        label = torch.full((h, w), self.labels.index("background"))
        label[: h // 4] = self.labels.index("hair")
        label[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = self.labels.index("skin")
        label[7 * h // 8 :] = self.labels.index("cloth")
        logits = torch.nn.functional.one_hot(label, 19).permute(2, 0, 1).float().expand(n, -1, -1, -1)
        return logits.clone(), "second output is ignored"


@pytest.mark.parametrize(
    "model, labels, mean, std",
    [
        ("parsenet", PARSENET_LABELS, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ("bisenet", BISENET_LABELS, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ],
)
def test_network_input_is_normalised_rgb_512(model, labels, mean, std):
    net = _ScriptedNet(labels)
    crops = _crops(2, 512)
    FaceParser(model, net=net).masks(crops)
    expected = (crops - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(net.inputs[0], expected, rtol=0, atol=1e-6)
    FaceParser(model, net=net).masks(_crops(1, 256))
    assert net.inputs[1].shape == (1, 3, 512, 512)


@pytest.mark.parametrize("size", [256, 512, 1024])
def test_scripted_layout_gives_a_soft_face_mask(size):
    net = _ScriptedNet(PARSENET_LABELS)
    crops = _crops(2, size)
    before = crops.clone()
    m = FaceParser("parsenet", net=net).masks(crops)
    assert torch.equal(crops, before)
    assert m.shape == (2, size, size) and m.dtype == torch.float32
    assert m.min() >= 0 and m.max() <= 1
    c = size // 2
    assert m[:, c, c].min() > 0.99  # centre of the skin square
    assert m[:, size // 16, c].max() < 1e-3  # hair
    assert m[:, 15 * size // 16, c].max() < 1e-3  # cloth
    assert m[:, c, size // 16].max() < 1e-3  # background beside the face
    assert torch.all(m[:, 0, :] == 0) and torch.all(m[:, :, -1] == 0)
    assert 0.3 < m[0, c, size // 4].item() < 0.7  # soft transition at the square's edge


def test_bad_crops_are_rejected():
    parser = FaceParser("parsenet", net=_ScriptedNet(PARSENET_LABELS))
    for bad, match in [
        (torch.zeros(1, 512, 512, 3), r"\(N, 3, S, S\)"),
        (torch.zeros(1, 3, 512, 256), "square"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "float"),
    ]:
        with pytest.raises(InvalidInputError, match=match):
            parser.masks(bad)
    with pytest.raises(InvalidInputError, match="parsenet"):
        FaceParser("segformer")


# ---------------------------------------------------------------- real facexlib networks, random weights


def test_parsenet_random_weights_shapes_and_range():
    torch.manual_seed(0)
    net = build_parsing_net("parsenet")
    m = FaceParser("parsenet", net=net).masks(_crops(1, 256, seed=3))
    assert m.shape == (1, 256, 256) and m.dtype == torch.float32
    assert m.min() >= 0 and m.max() <= 1 and torch.all(m[:, 0, :] == 0)


def test_bisenet_batched_equals_single(bisenet):
    crops = _crops(2, 384, seed=5)
    parser = FaceParser("bisenet", net=bisenet, batch_size=2)
    batched = parser.masks(crops)
    singles = torch.cat([parser.masks(crops[i : i + 1]) for i in range(2)])
    assert batched.shape == (2, 384, 384)
    assert batched.min() >= 0 and batched.max() <= 1
    torch.testing.assert_close(batched, singles, rtol=0, atol=1e-4)


def test_bisenet_weights_found_in_extra_dirs(bisenet, tmp_path):
    extra = tmp_path / "facedetection_extra"
    extra.mkdir()
    torch.save(bisenet.state_dict(), extra / "parsing_bisenet.pth")
    loaded = FaceParser("bisenet", extra_dirs=[extra], allow_download=False)
    crops = _crops(1, 512, seed=6)
    torch.testing.assert_close(loaded.masks(crops), FaceParser("bisenet", net=bisenet).masks(crops), rtol=0, atol=1e-5)


def test_wrong_weights_file_is_a_clear_error(bisenet, tmp_path):
    path = tmp_path / "parsing_parsenet.pth"
    torch.save(bisenet.state_dict(), path)  # BiSeNet weights under ParseNet's name
    with pytest.raises(ModelLoadError, match="parsenet") as err:
        FaceParser("parsenet", weights_path=path)
    assert str(path) in str(err.value)


# ---------------------------------------------------------------- missing weights


def test_missing_weights_without_download():
    with pytest.raises(MissingWeightsError) as err:
        FaceParser(allow_download=False)
    msg = str(err.value)
    assert "parsing_parsenet.pth" in msg and str(paths.models_dir("facedetection")) in msg


def test_missing_weights_and_no_network(monkeypatch):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}/parsing_bisenet.pth"
    s.close()
    monkeypatch.setitem(registry.REGISTRY, "parsing_bisenet.pth", registry.WeightsFile("parsing_bisenet.pth", "facedetection", (url,)))
    with pytest.raises(MissingWeightsError) as err:
        FaceParser("bisenet")
    msg = str(err.value)
    assert "parsing_bisenet.pth" in msg and url in msg and str(paths.models_dir("facedetection")) in msg


# ---------------------------------------------------------------- regions


# What each region means, written out by hand from the two parsers' label tables (facexlib's
# inference scripts, listed at the top of this file): region -> (ParseNet indices, BiSeNet indices).
REGION_INDICES = {
    "skin": ({1}, {1}), "brows": ({6, 7}, {2, 3}), "eyes": ({4, 5}, {4, 5}), "glasses": ({3}, {6}),
    "ears": ({8, 9}, {7, 8}), "earrings": ({15}, {9}), "nose": ({2}, {10}), "mouth": ({10}, {11}),
    "teeth": ({10}, {11}), "lips": ({11, 12}, {12, 13}), "hair": ({13}, {17}), "hat": ({14}, {18}),
    "neck": ({17}, {14}), "necklace": ({16}, {15}), "clothes": ({18}, {16}), "background": ({0}, {0}),
}  # fmt: skip


def test_every_region_maps_to_the_right_classes_of_each_parser():
    assert set(REGIONS) == set(REGION_INDICES)
    for name, (pn, bs) in REGION_INDICES.items():
        assert set(label_indices(PARSENET_LABELS, region_parts("parsenet", name))) == pn, name
        assert set(label_indices(BISENET_LABELS, region_parts("bisenet", name))) == bs, name
    # the default regions are exactly the default face parts (today's mask)
    for model, labels in (("parsenet", PARSENET_LABELS), ("bisenet", BISENET_LABELS)):
        assert set(label_indices(labels, region_parts(model, None))) == set(label_indices(labels, FACE_PARTS))
        assert region_parts(model, DEFAULT_REGIONS) == region_parts(model, None)


def test_region_lists_are_parsed_and_checked():
    assert parse_regions(None) == DEFAULT_REGIONS
    assert parse_regions(" Eyes, teeth ,eyes  skin") == ("eyes", "teeth", "skin")
    assert parse_regions(["nose", "LIPS"]) == ("nose", "lips")
    with pytest.raises(InvalidInputError, match="beard") as err:
        parse_regions("skin,beard")
    assert "teeth" in str(err.value)  # the message lists what can be chosen
    with pytest.raises(InvalidInputError, match="at least one"):
        parse_regions(" , ")
    with pytest.raises(InvalidInputError, match="segformer"):
        region_parts("segformer", "skin")


@pytest.mark.parametrize("model, labels", [("parsenet", PARSENET_LABELS), ("bisenet", BISENET_LABELS)])
@pytest.mark.parametrize("regions", ["eyes,teeth", "skin,hair,glasses", "brows"])
def test_only_the_chosen_regions_are_in_the_mask(model, labels, regions):
    parser = FaceParser(model, net=GridParserNet(labels), blur_sigma=2.0)
    m = parser.masks(_crops(1, 512), regions=regions)[0]
    chosen = set(region_parts(model, regions))
    assert chosen  # the test would prove nothing otherwise
    for name, rows, cols in GridParserNet.cells():
        r, c = interior(rows, cols, 12)  # 3 sigma of the blur plus the 10 px edge ramp
        if name in chosen:
            assert m[r, c].min() > 0.999, (name, float(m[r, c].min()))
        else:
            assert torch.all(m[r, c] == 0), (name, float(m[r, c].max()))
    # without regions: the parts given at construction (the default face)
    default = parser.masks(_crops(1, 512))[0]
    for name, rows, cols in GridParserNet.cells():
        r, c = interior(rows, cols, 12)
        assert bool((default[r, c] > 0.999).all()) == (name in FACE_PARTS), name
    # regions given at construction: the same mask
    fixed = FaceParser(model, net=GridParserNet(labels), blur_sigma=2.0, regions=regions)
    assert torch.equal(fixed.masks(_crops(1, 512))[0], m)
