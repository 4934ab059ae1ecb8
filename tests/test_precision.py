"""dtype="auto": one rule for load_model, the CLI and the node; bfloat16 with float32 where it matters.

The PSNR floor (45 dB, the issue's bar) is checked against the official outputs of the reference
fixtures and, for the released 256/512 layouts (seeded), against float32 on a real aligned face.
Measured on the 2-core AMD EPYC (Zen 4): bench/results/cpu_bf16_precision_epyc_zen4.json
(s256 57.4, s512 51.9, s1024 51.5 dB against float32; 256 51.9, 512 52.2 on the astronaut; bfloat16
everywhere: 53.6, 47.0, 45.4, 46.1, 48.9).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import gpen
from gpen import cpuinfo
from gpen.model import precision
from gpen.model.layouts import seeded_state_dict
from gpen.runs.jobs import pick_dtype

from conftest import FIXTURES, load_reference_fixture, psnr

MIN_PSNR_DB = 45.0

CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
model name\t: {model}
flags\t\t: fpu sse2 avx2 avx512f {flags}

processor\t: 1
vendor_id\t: {vendor}
flags\t\t: fpu
"""

CPUS = [  # vendor, model, flags, what auto picks on the CPU
    ("GenuineIntel", "Intel(R) Xeon(R) Platinum 8481C", "avx512_bf16 amx_tile amx_bf16 amx_int8", torch.bfloat16),
    ("GenuineIntel", "Intel(R) Xeon(R) Platinum 8380", "avx512_vnni", torch.float32),
    ("GenuineIntel", "Intel(R) Xeon(R) Gold 6348H (Cooper Lake)", "avx512_bf16 avx512_vnni", torch.float32),
    ("AuthenticAMD", "AMD EPYC 9R14 (Zen 4)", "avx512_bf16 avx512_vnni", torch.bfloat16),
    ("AuthenticAMD", "AMD EPYC 7R13 (Zen 3)", "", torch.float32),
    ("", "", "", torch.float32),
]


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    """Point gpen.cpuinfo at a fake /proc/cpuinfo (the cache is cleared before and after). The node's
    ``precision: auto`` is checked with such files in tests/test_node_execute.py."""
    monkeypatch.delenv(precision.NO_CPU_BF16_ENV, raising=False)  # set for the rest of the suite (conftest)

    def use(vendor: str, model: str, flags: str) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(CPUINFO.format(vendor=vendor, model=model, flags=flags) if vendor else "processor\t: 0\n")
        monkeypatch.setattr(cpuinfo, "CPUINFO_PATH", str(path))
        monkeypatch.setattr(cpuinfo.platform, "processor", lambda: "")
        cpuinfo.cpu_facts.cache_clear()

    yield use
    cpuinfo.cpu_facts.cache_clear()


@pytest.mark.parametrize("vendor, model, flags, expected", CPUS)
def test_bfloat16_winograd_only_where_it_was_measured(fake_cpu, vendor, model, flags, expected):
    """bfloat16 3x3 layers of 16-128 px with 128+ channels go through Winograd F(2x2) except on AMX
    processors (not measured there against AMX's direct convolutions); float32 ones on every processor."""
    from gpen.model import winograd

    fake_cpu(vendor, model, flags)

    def x(side, dtype=torch.bfloat16):
        return torch.zeros(1, 128, side, side, dtype=dtype).contiguous(memory_format=torch.channels_last)

    amx = "amx_bf16" in flags
    assert [winograd.pays(128, 128, x(side)) for side in (8, 16, 128, 256)] == [False, not amx, not amx, False]
    assert winograd.pays(128, 128, x(256, torch.float32))


def tiny_state() -> dict:
    return seeded_state_dict(gpen.GPENConfig(size=64, style_dim=32, n_mlp=2, narrow=0.0625), seed=1)


@pytest.mark.parametrize("vendor, model, flags, expected", CPUS)
def test_auto_follows_the_processor(fake_cpu, vendor, model, flags, expected):
    fake_cpu(vendor, model, flags)
    assert cpuinfo.cpu_facts().model == model
    assert precision.auto_dtype("cpu") == expected
    net = gpen.load_model(tiny_state(), device="cpu", dtype="auto")
    assert net.dtype == expected
    assert pick_dtype("auto", torch.device("cpu")) == precision.NAMES[expected]  # the CLI's --dtype auto
    assert pick_dtype("fp32", torch.device("cpu")) == "fp32"
    with torch.inference_mode():
        out = net(torch.zeros(1, 3, 64, 64))
    assert out.dtype == expected and torch.isfinite(out).all()


def test_auto_on_gpus_is_float16_unless_the_host_says_otherwise(fake_cpu):
    fake_cpu("AuthenticAMD", "AMD EPYC", "avx512_bf16")
    for device in ("cuda", "cuda:1", "mps"):
        assert precision.auto_dtype(device) == torch.float16
        assert precision.auto_dtype(device, fp16_ok=False) == torch.float32
        assert pick_dtype("auto", torch.device(device)) == "fp16"
    assert precision.auto_dtype("cpu", fp16_ok=False) == torch.bfloat16


def test_bfloat16_keeps_the_style_path_and_small_layers_in_float32():
    net = gpen.load_model(seeded_state_dict("GPEN-BFR-256", seed=0), dtype="bf16")
    dtypes = {name: p.dtype for name, p in net.named_parameters()}
    assert net.dtype == torch.bfloat16
    assert dtypes["ecd0.0.0.weight"] == dtypes["generator.convs.11.conv.weight"] == torch.bfloat16  # 256 px
    assert dtypes["ecd3.0.1.weight"] == torch.bfloat16  # 32 px
    for name in ("generator.style.1.weight", "final_linear.0.weight", "generator.convs.11.conv.modulation.weight",
                 "ecd0.0.1.bias", "generator.convs.0.noise.weight", "generator.input.input",
                 "ecd4.0.1.weight", "ecd5.0.1.weight", "ecd6.0.1.weight",  # 16, 8 and 4 px
                 "generator.conv1.conv.weight", "generator.convs.3.conv.weight", "generator.to_rgbs.1.conv.weight"):
        assert dtypes[name] == torch.float32, name
    assert dtypes["generator.convs.4.conv.weight"] == torch.bfloat16  # 32 px
    # A float32 network cast later gets the same split; a cast back to float32 makes all float32.
    again = precision.cast(gpen.load_model(seeded_state_dict("GPEN-BFR-256", seed=0)), torch.bfloat16)
    assert {n: p.dtype for n, p in again.named_parameters()} == dtypes
    assert {p.dtype for p in again.float().parameters()} == {torch.float32}


def to_image(t: torch.Tensor) -> torch.Tensor:
    return (t.float().clamp(-1, 1) + 1) / 2


@pytest.mark.parametrize("winograd_everywhere", [False, True])
@pytest.mark.parametrize("tag", ["s256", "s512", "s1024"])
def test_bfloat16_within_45_db_of_the_official_outputs(monkeypatch, tag, winograd_everywhere):
    """The guard: bfloat16 (as auto picks it on bf16 processors) against the official float32 output;
    also with every bfloat16 3x3 layer of the fixture's narrow widths through Winograd F(2x2)."""
    from gpen.model import winograd

    calls = []
    if winograd_everywhere:
        monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
        monkeypatch.setattr(winograd, "MIN_SIDE", 4)
        monkeypatch.setattr(winograd, "BF16_MAX_SIDE", 10 ** 9)
        monkeypatch.setattr(winograd, "BF16_ON_AMX", True)
        conv3x3 = winograd.conv3x3
        monkeypatch.setattr(winograd, "conv3x3", lambda x, *a: calls.append(x.dtype) or conv3x3(x, *a))
    f = load_reference_fixture(tag)
    net = gpen.load_model(f["checkpoint"], dtype="bf16")
    with torch.inference_mode():
        out = net(f["input"])
    k = f["meta"]["subsample_step"]
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert psnr(to_image(out[:, :, ::k, ::k]), to_image(f["expected"])) >= MIN_PSNR_DB
    assert (torch.bfloat16 in calls) == winograd_everywhere


def astronaut_face(size: int) -> torch.Tensor:
    """skimage's astronaut aligned to the GPEN template at ``size`` px, -1..1 (as bench/common.aligned_face)."""
    from skimage import data

    from gpen.faces.align import estimate_similarity, template_points, warp_affine

    marks = json.loads((FIXTURES / "geometry" / "landmarks.json").read_text())
    points = np.asarray(marks["images"]["skimage.data.astronaut"]["faces"][0]["landmarks5"], np.float64)
    image = torch.from_numpy(data.astronaut().astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    m = estimate_similarity(points, template_points("gpen", size))
    return warp_affine(image, torch.from_numpy(m)[None].float(), None, size) * 2 - 1


@pytest.mark.parametrize("name", ["GPEN-BFR-256", "GPEN-BFR-512"])
def test_bfloat16_within_45_db_of_float32_on_a_real_face(name):
    state = seeded_state_dict(name, seed=0)
    ref, half = gpen.load_model(state), gpen.load_model(state, dtype="bf16")
    x = astronaut_face(ref.size)
    with torch.inference_mode():
        a, b = ref(x), half(x)
    assert psnr(to_image(a), to_image(b)) >= MIN_PSNR_DB


def test_bfloat16_plain_path_equals_the_kept_buffer_path(monkeypatch):
    """The path without kept buffers (GPUs, tracing) casts at the same places and computes the same."""
    from gpen.model.workspace import KeepsBuffers

    f = load_reference_fixture("s256")
    net = gpen.load_model(f["checkpoint"], dtype="bf16")
    with torch.inference_mode():
        kept = net(f["input"])

        class Plain:
            def __enter__(self):
                return None

            def __exit__(self, *exc):
                return False

        monkeypatch.setattr(KeepsBuffers, "buffer_session", lambda self, x: Plain())
        plain = net(f["input"])
    assert plain.dtype == torch.bfloat16
    assert psnr(to_image(kept), to_image(plain)) >= 50.0  # both round to bfloat16 at different places


def test_the_environment_can_keep_auto_off_bf16(fake_cpu, monkeypatch):
    """GPEN_AUTO_NO_CPU_BF16=1 (what the test suite runs with) keeps auto at float32 on the CPU only."""
    fake_cpu("AuthenticAMD", "AMD EPYC 9R14 (Zen 4)", "avx512_bf16")
    assert precision.auto_dtype("cpu") == torch.bfloat16
    monkeypatch.setenv(precision.NO_CPU_BF16_ENV, "1")
    assert precision.auto_dtype("cpu") == torch.float32
    assert precision.auto_dtype("cuda") == torch.float16
