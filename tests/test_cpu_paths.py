"""The CPU fast paths of the network: Winograd convolutions, convolutions into kept buffers, the
matrix-product transposed convolution, oneDNN's matrix products, and the workspace that keeps those
buffers between calls.

Each path is checked against the plain PyTorch operation it replaces (float64 references), and the
network with every path forced on, and with every path off, against the official outputs.
"""

from __future__ import annotations

import copy
import pickle
import platform
import threading

import pytest
import torch
import torch.nn.functional as F

import gpen
import gpen.model.network as network
from gpen.model import cpu_conv, cpu_matmul, filters, layers, winograd
from gpen.model.workspace import Workspace

from conftest import load_reference_fixture
from test_network import TOL, relative_error, subsample


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref).abs().max() / ref.std()).item()


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("batch, cin, cout, side, bands", [(1, 64, 32, 16, 1), (2, 48, 40, 8, 1), (3, 16, 24, 4, 1),
                                                           (2, 16, 8, 16, 2), (1, 8, 8, 16, 4)])
def test_winograd_conv_equals_direct_convolution(monkeypatch, batch, cin, cout, side, bands, onednn):
    monkeypatch.setattr(winograd, "bands", lambda *a, **k: bands)
    monkeypatch.setattr(cpu_matmul, "ENGINE", "onednn" if onednn else "torch")
    g = torch.Generator().manual_seed(batch * 100 + cin)
    x = _nhwc(torch.randn(batch, cin, side, side, generator=g))
    w = torch.randn(cout, cin, 3, 3, generator=g)
    scale, gain, bias = torch.rand(batch, cin, generator=g) + 0.5, torch.rand(batch, cout, generator=g), torch.randn(cout)
    ref = (F.conv2d((x * scale[:, :, None, None]).double(), w.double(), padding=1) * gain[:, :, None, None].double()
           + bias.double().view(1, -1, 1, 1))
    ws = Workspace()
    for _ in range(2):  # the second time through kept (dirty) buffers
        with ws.session(("t",)) as s:
            out = _nhwc(torch.full((batch, 2 * cout, side, side), float("nan")))
            winograd.conv3x3(x, scale, winograd.conv_weight(w), out[:, :cout], bias, gain, s)
        assert _rel(out[:, :cout], ref) < 1e-4  # F(4x4, 3x3) rounding: measured 1-3e-5 of the output's spread
        assert torch.isnan(out[:, cout:]).all()  # the other half of the buffer is left alone
    assert winograd.pays(128, 128, _nhwc(torch.zeros(1, 128, 16, 16)))
    assert not winograd.pays(64, 32, _nhwc(torch.zeros(1, 64, 1024, 1024)))
    assert not winograd.pays(128, 128, _nhwc(torch.zeros(1, 128, 16, 16, dtype=torch.float16)))


@pytest.mark.parametrize("batch, cin, cout, side, bands", [(1, 128, 128, 16, 1), (2, 256, 64, 8, 1), (1, 64, 96, 32, 4)])
def test_winograd_in_bfloat16_is_f2x2_within_2_5x_the_error_of_a_direct_bfloat16_convolution(
        monkeypatch, batch, cin, cout, side, bands):
    """bfloat16 Winograd uses F(2x2, 3x3): its RMS error against float64 (inputs already bfloat16) stays
    within 2.5x that of oneDNN's direct bfloat16 convolution (measured 1.5-1.7x; F(4x4) in bfloat16:
    8-9.6x, ``bench/results/cpu_winograd_bf16_error_epyc_zen4.json``)."""
    monkeypatch.setattr(winograd, "bands", lambda *a, **k: bands)
    bf = torch.bfloat16
    g = torch.Generator().manual_seed(side * 10 + cin)
    x = _nhwc(torch.randn(batch, cin, side, side, generator=g).to(bf))
    w = torch.randn(cout, cin, 3, 3, generator=g).to(bf)
    scale, gain = (torch.rand(batch, cin, generator=g) + 0.5).to(bf), torch.rand(batch, cout, generator=g).to(bf)
    bias = torch.randn(cout, generator=g).to(bf)
    ref = (F.conv2d(x.double() * scale.double()[:, :, None, None], w.double(), padding=1)
           * gain.double()[:, :, None, None] + bias.double().view(1, -1, 1, 1))
    direct = F.conv2d(x * scale[:, :, None, None], w, padding=1) * gain[:, :, None, None] + bias.view(1, -1, 1, 1)
    u = winograd.conv_weight(w)
    assert winograd.tile(bf) == 2 and u.shape == (16, cin, cout) and u.dtype == bf
    with Workspace().session(("t",)) as s:
        out = _nhwc(torch.full((batch, 2 * cout, side, side), float("nan"), dtype=bf))
        winograd.conv3x3(x, scale, u, out[:, :cout], bias, gain, s)

    def rms(t):
        return ((t.double() - ref).pow(2).mean().sqrt() / ref.std()).item()

    assert torch.isnan(out[:, cout:]).all()
    assert rms(out[:, :cout]) < 2.5 * rms(direct)


@pytest.mark.parametrize("scratch", [True, False])  # the product into a scratch matrix (torch.mm), or a new one
@pytest.mark.parametrize("batch, cin, cout, h, w", [(1, 8, 4, 4, 4), (2, 16, 8, 8, 4), (3, 5, 7, 1, 2)])
def test_matrix_product_transposed_conv_equals_conv_transpose2d(batch, cin, cout, h, w, scratch):
    g = torch.Generator().manual_seed(cin)
    x = _nhwc(torch.randn(batch, cin, h, w, generator=g))
    weight = torch.randn(cout, cin, 3, 3, generator=g)
    ref = F.conv_transpose2d(x.double(), weight.transpose(0, 1).double(), stride=2)
    out = _nhwc(torch.full((batch, 2 * cout, 2 * h + 1, 2 * w + 1), float("nan")))
    taps = torch.empty(batch * h * w, 9 * cout) if scratch else None
    cpu_conv.conv_transpose3x3_s2_into(out[:, cout:], x, cpu_conv.transpose_weight_cols(weight), taps)
    assert (out[:, cout:].double() - ref).abs().max() < 1e-4  # every pixel written, NaN-filled buffer
    assert torch.isnan(out[:, :cout]).all()


@pytest.mark.parametrize("onednn", [True, False])
def test_matrix_products_equal_torch_mm(monkeypatch, onednn):
    monkeypatch.setattr(cpu_matmul, "ENGINE", "onednn" if onednn else "torch")
    g = torch.Generator().manual_seed(3)
    x, w, b = torch.randn(37, 19, generator=g), torch.randn(11, 19, generator=g), torch.randn(11, generator=g)
    ref = x.double() @ w.double().t()
    for weight in (w, w.t().contiguous().t()):  # (out, in) stored either way
        assert torch.allclose(cpu_matmul.linear(x, weight).double(), ref, atol=1e-5)
        assert torch.allclose(cpu_matmul.linear(x, weight, b).double(), ref + b.double(), atol=1e-5)
    assert torch.allclose(cpu_matmul.linear(x.t().contiguous().t(), w).double(), ref, atol=1e-5)  # strided input
    assert cpu_matmul.linear(x, w).is_contiguous()
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    assert cpu_matmul.uses_onednn(torch.float32) is (onednn and x86)  # oneDNN works on x86-64 CPUs
    assert not cpu_matmul.uses_onednn(torch.bfloat16)  # float32 only
    # by default: on x86 processors other than Intel's (MKL takes its best code only on Intel's)
    monkeypatch.setattr(cpu_matmul, "ENGINE", "auto")
    for vendor, expected in (("GenuineIntel", False), ("AuthenticAMD", x86), ("HygonGenuine", x86), ("", x86)):
        monkeypatch.setattr(cpu_matmul, "cpu_vendor", lambda v=vendor: v)
        assert cpu_matmul.uses_onednn(torch.float32) is expected, vendor


@pytest.mark.parametrize("cin, cout, h, w", [(8, 6, 7, 5), (16, 8, 40, 33), (4, 4, 1, 3), (3, 5, 2, 2)])
@pytest.mark.parametrize("band_bytes", [1, 700, 5000, 10 ** 9])
def test_banded_upsampling_equals_transposed_conv_then_blur(cin, cout, h, w, band_bytes):
    g = torch.Generator().manual_seed(cin * h)
    x = _nhwc(torch.randn(1, cin, h, w, generator=g))
    weight_t = torch.randn(cin, cout, 3, 3, generator=g)
    kernel = filters.blur_kernel(gain=4.0)
    ref = filters.fir(F.conv_transpose2d(x.double(), weight_t.double(), stride=2), kernel.double(), (1, 1))
    out = _nhwc(torch.full((1, cout, 2 * h, 2 * w), float("nan")))
    blur = filters.depthwise_weight(kernel, cout, torch.float32).contiguous()
    cpu_conv.upsample_blur_into(out, x, weight_t, blur, band_bytes=band_bytes)  # 1 byte: bands of 2 rows
    assert _rel(out, ref) < 1e-5  # every row written (NaN-filled buffer), band borders included


@pytest.mark.parametrize("batch, c, h, w", [(1, 3, 8, 8), (2, 3, 5, 7), (1, 4, 1, 1), (3, 2, 16, 4)])
def test_separable_upsampling_equals_the_fir_filter(batch, c, h, w):
    g = torch.Generator().manual_seed(h * w)
    x = torch.randn(batch, c, h, w, generator=g)
    up = filters.Upsample()
    ref = filters.fir(x.double(), up.kernel.double(), up.pad, up=2)
    base = torch.randn(batch, c, 2 * h, 2 * w, generator=g)
    for layout in (torch.contiguous_format, torch.channels_last):
        out = base.clone().contiguous(memory_format=layout)
        with Workspace().session(("t",)) as s:
            res = up.add_to(out, x, s)
        assert res.data_ptr() == out.data_ptr()
        assert (out.double() - base.double() - ref).abs().max() < 1e-5
    assert filters.separable_taps(up.kernel) == pytest.approx((0.25, 0.75, 0.75, 0.25))
    assert filters.separable_taps(torch.tensor([[1.0, 2.0], [3.0, 4.0]])) is None  # not outer(t, t)
    odd = filters.Upsample()
    odd.kernel = torch.outer(torch.tensor([1.0, 2.0, 3.0, 1.0]), torch.tensor([1.0, 2.0, 3.0, 1.0]))  # asymmetric
    out = base.clone()
    with Workspace().session(("t",)) as s:
        odd.add_to(out, x, s)  # falls back to the filter itself
    assert torch.allclose(out, base + odd(x), atol=1e-5)


@pytest.mark.parametrize("onednn", [True, False])
def test_conv_into_buffer_equals_conv2d(monkeypatch, onednn):
    monkeypatch.setattr(cpu_conv, "enabled", onednn)
    g = torch.Generator().manual_seed(1)
    x = _nhwc(torch.randn(2, 8, 9, 9, generator=g))
    for weight, bias, stride, pad, groups in [(torch.randn(6, 8, 3, 3, generator=g), torch.randn(6), 1, 1, 1),
                                             (torch.randn(6, 8, 3, 3, generator=g), None, 2, 0, 1),
                                             (torch.randn(8, 1, 4, 4, generator=g), None, 1, 2, 8)]:
        ref = F.conv2d(x, weight, bias, stride=stride, padding=pad, groups=groups)
        out = _nhwc(torch.full(ref.shape, float("nan")))
        res = cpu_conv.conv2d_into(out, x, weight, bias, stride, pad, groups)
        assert res.data_ptr() == out.data_ptr()
        assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    assert cpu_conv.inplace_supported(torch.float32) is onednn


def _force_fast_paths(monkeypatch, on: bool | str) -> None:
    """Every CPU path on wherever it applies (also on the small fixture widths), or every one off;
    ``"banded"``: on, with every transposed convolution banded (in bands of two rows) instead of
    one matrix product; ``"direct"``: on, with the 3x3 convolutions direct (oneDNN, demodulation folded
    into the weights) instead of Winograd's; ``"torch.mm"``: on, with the matrix products in torch
    (MKL) instead of oneDNN."""
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1 if on and on != "direct" else 10 ** 9)
    monkeypatch.setattr(winograd, "MIN_SIDE", 4 if on else 10 ** 9)
    monkeypatch.setattr(network, "GEMM_TRANSPOSED_MAX_SIDE", 10 ** 9 if on is True else 0)
    monkeypatch.setattr(network, "BANDED_UPSAMPLE", on == "banded")
    monkeypatch.setattr(network, "FOLD_DEMODULATION", bool(on))
    monkeypatch.setattr(cpu_conv, "BAND_BYTES", 1)
    monkeypatch.setattr(cpu_conv, "enabled", bool(on))
    monkeypatch.setattr(filters, "SEPARABLE_UPSAMPLE", bool(on))
    monkeypatch.setattr(cpu_matmul, "ENGINE", "onednn" if on and on != "torch.mm" else "torch")


@pytest.mark.parametrize("on", [True, "banded", "direct", "torch.mm", False])
@pytest.mark.parametrize("tag", ["s256", "s512"])
def test_network_matches_official_outputs_with_every_cpu_path_on_or_off(monkeypatch, tag, on):
    _force_fast_paths(monkeypatch, on)
    bands = []
    banded = network.upsample_blur_into
    monkeypatch.setattr(network, "upsample_blur_into", lambda *a: bands.append(a[1].shape) or banded(*a))
    products = []
    onednn = cpu_matmul._onednn
    monkeypatch.setattr(cpu_matmul, "_onednn", lambda *a: products.append(a[0].shape) or onednn(*a))
    f = load_reference_fixture(tag)
    net = gpen.load_model(f["checkpoint"])
    with torch.inference_mode():
        out = net(f["input"])
        again = net(f["input"])  # through the kept buffers
    assert relative_error(subsample(out, f["meta"]), f["expected"]) <= TOL
    assert torch.equal(out, again)
    assert bool(bands) == (on == "banded")  # the banded path ran where it was meant to
    assert bool(products) == (on in (True, "banded", "direct") and cpu_matmul.onednn_works())  # and oneDNN's products


def test_kept_buffers_are_reused_and_never_returned(monkeypatch):
    f = load_reference_fixture("s256")
    net = gpen.load_model(f["checkpoint"])
    x = f["input"].clone()
    with torch.inference_mode():
        first = net(x)
        held = net.workspace_bytes()
        kept = {b.tensor.untyped_storage().data_ptr() for b in net._workspace._free}
        second = net(x)
        assert net.workspace_bytes() == held  # nothing new was kept ...
        assert kept == {b.tensor.untyped_storage().data_ptr() for b in net._workspace._free}
        assert held > 0 and torch.equal(first, second)  # ... the same buffers were used again
        assert first.untyped_storage().data_ptr() not in kept and second.untyped_storage().data_ptr() not in kept
        second.fill_(7.0)  # a caller writing into its result changes nothing kept
        assert torch.equal(net(x), first)
    assert torch.equal(x, f["input"])  # the input is never written


def test_buffers_are_bounded_released_and_follow_moves():
    f = load_reference_fixture("s256")
    x = f["input"][:1]
    net, fresh = gpen.load_model(f["checkpoint"]), gpen.load_model(f["checkpoint"])
    with torch.inference_mode():
        held = []
        for batch in (1, 2, 1, 2, 1, 2):  # e.g. full chunks and a last, smaller one
            net(x.expand(batch, -1, -1, -1))
            held.append(net.workspace_bytes())
        assert held[-1] == held[-3]  # alternating between two shapes keeps a fixed set of buffers
        for batch in (3, 4):  # two newer shapes: the buffers only the older ones used go
            net(x.expand(batch, -1, -1, -1))
            fresh(x.expand(batch, -1, -1, -1))
        assert net.workspace_bytes() <= 1.2 * fresh.workspace_bytes()
        net.to("cpu")  # no move: buffers stay
        assert net.workspace_bytes() > 0
        net.release_buffers()
        assert net.workspace_bytes() == 0
        net(f["input"])
        net.to(torch.float64)  # a cast: the old buffers and derived weights go
        assert net.workspace_bytes() == 0


def test_one_model_from_two_threads():
    f = load_reference_fixture("s256")
    net = gpen.load_model(f["checkpoint"])
    x = f["input"]
    with torch.inference_mode():
        expected = [net(x[i:i + 1]) for i in range(2)]
    results, errors = {}, []

    def work(i):
        try:
            with torch.inference_mode():
                for _ in range(3):
                    results.setdefault(i, []).append(net(x[i:i + 1]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(2):
        assert all(torch.equal(r, expected[i]) for r in results[i])


def test_copies_and_pickles_start_with_empty_buffers():
    f = load_reference_fixture("s256")
    net = gpen.load_model(f["checkpoint"])
    with torch.inference_mode():
        expected = net(f["input"])
    for other in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert other.workspace_bytes() == 0
        with torch.inference_mode():
            assert torch.equal(other(f["input"]), expected)


def test_style_path_gives_each_row_the_result_it_has_alone():
    # A CPU matrix product with one row runs another kernel than with several (sums in another
    # order): the style path goes row by row, so a face's style never depends on its batch.
    from gpen.model.layers import EqualLinear

    torch.manual_seed(0)
    layer = EqualLinear(4096, 512, activation=True)
    x = torch.randn(5, 4096)
    together = layer(x)
    assert all(torch.equal(together[i:i + 1], layer(x[i:i + 1])) for i in range(5))
    conv = network.ModulatedConv2d(512, 512, 3, 512)
    s, d = conv.styles(x[:, :512])
    for i in range(5):
        si, di = conv.styles(x[i:i + 1, :512])
        assert torch.equal(s[i:i + 1], si) and torch.equal(d[i:i + 1], di)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_short_channel_runs_finish_in_contiguous_passes_with_the_same_values(monkeypatch, dtype):
    """Layers whose output channels are runs shorter than ``SHORT_RUN_BYTES`` per pixel finish their
    concatenation in contiguous passes (bfloat16 at 16 channels); the values are those of the
    passes over each half: the same operations on every element."""
    f = load_reference_fixture("s512")
    calls = []
    finish = layers.finish_in_contiguous_passes
    monkeypatch.setattr(layers, "finish_in_contiguous_passes", lambda *a: calls.append(a[1].shape) or finish(*a))
    outs = {}
    for name, limit in (("halves", 0), ("contiguous", 10 ** 9)):
        monkeypatch.setattr(layers, "SHORT_RUN_BYTES", limit)
        net = gpen.load_model(f["checkpoint"], dtype=dtype)
        with torch.inference_mode():
            outs[name] = net(f["input"]).float()
    assert len(calls) >= 4  # every per-image layer of the fixture went through it
    assert torch.equal(outs["halves"], outs["contiguous"])
    if dtype == "fp32":
        assert relative_error(subsample(outs["contiguous"], f["meta"]), f["expected"]) <= TOL
