"""GPEN `.onnx` files: weights mapped back onto the PyTorch network (fast path) or run by onnxruntime.

Every graph here is exported in the test: the official formulation (``reference_forward`` over
checkpoint-named parameters, ``tests/onnx_reference.py``) with the legacy TorchScript exporter, as
the files in circulation were made, and with the dynamo exporter; and our own network with the
dynamo exporter. References are the PyTorch network on the same weights and, for the fixture
networks, the official outputs.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch
from torch import nn

import gpen
from gpen.errors import InvalidInputError, MissingWeightsError, ModelLoadError
from gpen.model.layouts import RELEASED_MODELS, released_layout, seeded_state_dict
from gpen.model.files import unwrap_state_dict
from gpen.model.loader import read_weights_file
from gpen.model.network import GPEN, GPENConfig
from gpen.model.onnx_graph import import_onnx
from gpen.model.onnx_loading import load_onnx_model
from gpen.model.onnx_mapping import execution_order, map_onnx_weights
from gpen.model.onnx_runtime import OnnxGPEN

from conftest import load_reference_fixture
from onnx_reference import CheckpointModule, Prefixed, export

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SMALL = GPENConfig(size=64, style_dim=32, n_mlp=2, narrow=0.0625)
FAST_TOL = 1e-4  # worst |difference| relative to the output's standard deviation
ORT_TOL = 1e-3


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().std())


def batch(n: int, size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def mapping_of(path, size):
    return map_onnx_weights(onnx.load(str(path)), size, import_onnx())


@pytest.fixture(scope="module")
def small_state() -> dict[str, torch.Tensor]:
    return seeded_state_dict(SMALL, seed=5)


@pytest.fixture(scope="module")
def small_net(small_state) -> GPEN:
    return gpen.load_model(small_state)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, small_state, small_net):
    """Lazily exported graphs of the small network, shared by the tests of this module."""
    folder = tmp_path_factory.mktemp("onnx")
    recipes = {
        # official formulation, as the files in circulation were made: legacy exporter, batch 1
        "official_legacy": lambda: (CheckpointModule(small_state), dict(batch=1, dynamo=False, opset=11)),
        "official_legacy_prefixed": lambda: (Prefixed(CheckpointModule(small_state)),
                                             dict(batch=1, dynamo=False, opset=11)),
        "official_dynamo": lambda: (CheckpointModule(small_state), dict(batch=1, dynamo=True)),
        # our network, dynamo exporter
        "ours_fixed2_prefixed_unoptimized": lambda: (Prefixed(small_net), dict(batch=2, dynamo=True, optimize=False)),
        "ours_dynamic_unoptimized": lambda: (small_net, dict(batch=2, dynamo=True, dynamic_batch=True,
                                                             optimize=False)),
        "ours_dynamic": lambda: (small_net, dict(batch=2, dynamo=True, dynamic_batch=True)),
        "ours_fixed2_prefixed": lambda: (Prefixed(small_net), dict(batch=2, dynamo=True)),
    }
    made = {}

    def get(name: str):
        if name not in made:
            module, kwargs = recipes[name]()
            made[name] = export(module, folder / f"GPEN-{name}.onnx", size=64, **kwargs)
        return made[name]

    return get


# ---- the official formulation: what users' files are ------------------------------------------------

@pytest.mark.parametrize("name", ["official_legacy", "official_legacy_prefixed"])
def test_legacy_export_of_official_formulation_maps_exactly(exports, small_state, small_net, name):
    path = exports(name)
    names = [t.name for t in onnx.load(str(path)).graph.initializer]
    # What the legacy exporter did: products with constants folded into renamed initializers.
    assert not any(n.endswith("ecd1.0.1.weight") for n in names)
    assert any(n.startswith("onnx::") for n in names)
    mapping = mapping_of(path, 64)
    assert mapping.by_position > 0 and mapping.prefix == ("net." if "prefixed" in name else "")
    for key, value in mapping.state.items():  # the checkpoint itself comes back, to float rounding
        assert torch.allclose(value, small_state[key], rtol=1e-5, atol=1e-6), key
    net = gpen.load_model(path)
    assert isinstance(net, GPEN) and net.size == 64 and net.config.n_mlp == 2 and net.config.style_dim == 32
    x = batch(3)
    want = small_net(x)
    assert rel(net(x), want) <= FAST_TOL
    ort = load_onnx_model(path, fast_path=False)
    assert isinstance(ort, OnnxGPEN) and ort.batch == 1
    assert rel(ort(x), want) <= ORT_TOL


def test_dynamo_export_of_official_formulation_maps(exports, small_state, small_net):
    path = exports("official_dynamo")
    mapping = mapping_of(path, 64)
    # The dynamo exporter keeps the names of large weights and folds the small ones.
    assert mapping.by_name > 0 and mapping.by_position > 0
    for key, value in mapping.state.items():
        assert torch.allclose(value, small_state[key], rtol=1e-5, atol=1e-6), key
    x = batch(2)
    assert rel(gpen.load_model(path)(x), small_net(x)) <= FAST_TOL


@pytest.mark.parametrize("tag", ["s256", "s512"])
def test_official_fixture_networks_through_onnx(tmp_path, tag):
    """Exported fixture checkpoints reproduce the official outputs on both paths."""
    f = load_reference_fixture(tag)
    state = unwrap_state_dict(read_weights_file(f["checkpoint"]))
    size = f["meta"]["size"]
    path = export(CheckpointModule(state), tmp_path / f"GPEN-{tag}.onnx", batch=1, size=size, dynamo=False, opset=11)
    step = f["meta"]["subsample_step"]
    fast = gpen.load_model(path)
    assert isinstance(fast, GPEN)
    assert rel(fast(f["input"])[:, :, ::step, ::step], f["expected"]) <= FAST_TOL
    ort = load_onnx_model(path, fast_path=False)
    assert rel(ort(f["input"])[:, :, ::step, ::step], f["expected"]) <= ORT_TOL


def test_full_layout_512_legacy_export(tmp_path):
    """The released GPEN-BFR-512 layout (seeded weights), exported like the files in circulation."""
    state = seeded_state_dict("GPEN-BFR-512", seed=7)
    path = export(CheckpointModule(state), tmp_path / "GPEN-BFR-512.onnx", batch=1, size=512, dynamo=False, opset=11)
    net = gpen.load_model(path)
    assert isinstance(net, GPEN) and net.config == released_layout("GPEN-BFR-512")["config"]
    for key, value in net.state_dict().items():
        assert torch.allclose(value, state[key], rtol=1e-5, atol=1e-6), key
    x = batch(1, 512)
    assert rel(net(x), gpen.load_model(state)(x)) <= FAST_TOL


# ---- our own network, dynamo exporter ------------------------------------------------------------------

@pytest.mark.parametrize("name, fixed", [("ours_fixed2_prefixed_unoptimized", 2), ("ours_dynamic_unoptimized", None)])
def test_our_export_with_names_uses_fast_path(exports, small_net, name, fixed):
    path = exports(name)
    mapping = mapping_of(path, 64)
    assert mapping.by_position == 0 and mapping.prefix == ("net." if "prefixed" in name else "")
    net = gpen.load_model(path)
    assert isinstance(net, GPEN)
    x = batch(3)
    assert rel(net(x), small_net(x)) <= FAST_TOL
    ort = load_onnx_model(path, fast_path=False)
    assert ort.batch == fixed
    assert rel(ort(x), small_net(x)) <= ORT_TOL


@pytest.mark.parametrize("name, fixed", [("ours_dynamic", None), ("ours_fixed2_prefixed", 2)])
def test_our_optimized_export_falls_back_to_onnxruntime(exports, small_net, caplog, name, fixed):
    """The optimizer folds our network's fused gains into renamed constants that do not map back."""
    path = exports(name)
    with caplog.at_level(logging.INFO, logger="gpen.model"):
        net = gpen.load_model(path, dtype="fp16")
    assert isinstance(net, OnnxGPEN)
    assert "fast path refused" in caplog.text and "weights of shape" in caplog.text
    assert "float16 does not apply on the onnxruntime path" in caplog.text
    assert (net.size, net.dtype, net.device, net.batch) == (64, torch.float32, torch.device("cpu"), fixed)
    x = batch(3)  # with a fixed batch of 2: one full chunk and one padded
    keep = x.clone()
    out = net(x)
    assert torch.equal(x, keep)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert rel(out, small_net(x)) <= ORT_TOL
    assert rel(net(x[1:2]), small_net(x[1:2])) <= ORT_TOL
    assert net(x[:0]).shape == (0, 3, 64, 64)
    with pytest.raises(InvalidInputError, match="takes \\(batch, 3, 64, 64\\)"):
        net(x[:, :, :32])


def test_fast_path_serves_fp16_and_logs_it(exports, small_net, caplog):
    path = exports("official_legacy")
    with caplog.at_level(logging.INFO, logger="gpen.model"):
        net = gpen.load_model(path, dtype="fp16")
    assert "fast path" in caplog.text and "by position" in caplog.text
    assert net.dtype == torch.float16
    x = batch(2)
    assert rel(net(x), small_net(x)) <= 2e-2


def test_read_weights_file_gives_the_verified_state_dict(exports, small_state):
    state = read_weights_file(exports("official_legacy"))
    assert set(state) == set(small_state)
    for key, value in state.items():
        assert torch.allclose(value, small_state[key], rtol=1e-5, atol=1e-6), key
    with pytest.raises(ModelLoadError, match="could not be mapped onto GPEN"):
        read_weights_file(exports("ours_dynamic"))


# ---- what is not GPEN, or not usable ----------------------------------------------------------------------

class TwoInputs(nn.Module):  # CodeFormer's signature: image and fidelity weight
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, w):
        return self.conv(x) * w


class TinyConvNet(nn.Module):  # one image in, same shape out: GPEN's signature
    def __init__(self, first: str = "body", stride: int = 1) -> None:
        super().__init__()
        setattr(self, first, nn.Conv2d(3, 8, 3, padding=1, stride=stride))
        self.first = first
        self.out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return self.out(torch.relu(getattr(self, self.first)(x)))


def export_plain(module, path, *shapes):
    import contextlib
    import io
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(torch.rand(*s) for s in shapes), str(path), dynamo=False, opset_version=17)
    return path


def test_two_inputs_is_not_gpen(tmp_path):
    path = export_plain(TwoInputs(), tmp_path / "codeformer.onnx", (1, 3, 64, 64), (1,))
    with pytest.raises(ModelLoadError, match="codeformer.onnx: not a GPEN model: it has 2 inputs"):
        gpen.load_model(path)


def test_same_signature_without_gpen_weights_is_refused(tmp_path):
    path = export_plain(TinyConvNet(), tmp_path / "restorer.onnx", (1, 3, 64, 64))
    with pytest.raises(ModelLoadError, match="restorer.onnx: not a GPEN model.*nothing in it could be recognised"):
        gpen.load_model(path)
    net = load_onnx_model(path, allow_unverified=True)  # on request it runs anyway
    x = batch(2)
    assert isinstance(net, OnnxGPEN) and net(x).shape == x.shape


def test_gfpgan_names_are_named(tmp_path):
    path = export_plain(TinyConvNet(first="conv_body_first"), tmp_path / "GFPGANv1.4.onnx", (1, 3, 64, 64))
    with pytest.raises(ModelLoadError, match="GFPGANv1.4.onnx: not a GPEN model \\(its weights look like GFPGAN\\)"):
        gpen.load_model(path)


@pytest.mark.parametrize("shape, stride, what", [((1, 4, 64, 64), 1, "takes \\(batch, 3, S, S\\)"),
                                                 ((1, 3, 64, 48), 1, "square images"),
                                                 ((1, 3, 64, 64), 2, "first output")])
def test_wrong_signatures_are_not_gpen(tmp_path, shape, stride, what):
    module = TinyConvNet(stride=stride)
    if shape[1] == 4:
        module.body = nn.Conv2d(4, 8, 3, padding=1)
    path = export_plain(module, tmp_path / "other.onnx", shape)
    with pytest.raises(ModelLoadError, match=f"other.onnx: not a GPEN model: .*{what}"):
        gpen.load_model(path)


def test_truncated_and_garbage_files_are_corrupt(exports, tmp_path):
    data = exports("official_legacy").read_bytes()
    cut = tmp_path / "GPEN-BFR-512.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="GPEN-BFR-512.onnx: truncated or corrupt file"):
        gpen.load_model(cut)
    junk = tmp_path / "GPEN-BFR-1024.onnx"
    junk.write_bytes(b"\x08\x07" + bytes(range(256)) * 4)
    with pytest.raises(ModelLoadError, match="GPEN-BFR-1024.onnx: truncated or corrupt file"):
        gpen.load_model(junk)
    empty = tmp_path / "GPEN-BFR-2048.onnx"
    empty.touch()
    with pytest.raises(ModelLoadError, match="empty \\(0 bytes\\)"):
        gpen.load_model(empty)
    with pytest.raises(MissingWeightsError):
        gpen.load_model(tmp_path / "absent.onnx")


def test_without_onnxruntime_says_what_to_install(exports, monkeypatch):
    path = exports("official_legacy")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModelLoadError, match="needs onnxruntime.*pip install onnxruntime.*onnxruntime-gpu"):
        gpen.load_model(path)


def test_without_onnx_package_runs_on_onnxruntime(exports, small_net, tmp_path, monkeypatch, caplog):
    path = exports("official_legacy")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with caplog.at_level(logging.WARNING, logger="gpen.model"):
        net = gpen.load_model(path)
    assert isinstance(net, OnnxGPEN) and "pip install onnx" in caplog.text
    x = batch(2)
    assert rel(net(x), small_net(x)) <= ORT_TOL
    anonymous = tmp_path / "model.onnx"  # nothing says GPEN: refused
    anonymous.write_bytes(path.read_bytes())
    with pytest.raises(ModelLoadError, match="model.onnx: not a GPEN model.*pip install onnx"):
        gpen.load_model(anonymous)


# ---- internals --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", RELEASED_MODELS)
def test_execution_order_lists_every_key_once(name):
    config = released_layout(name)["config"]
    order = execution_order(config)
    assert len(order) == len(set(order))
    assert set(order) == set(released_layout(name)["shapes"])


def test_probe_rejects_a_wrong_mapping(exports, monkeypatch, caplog):
    """A mapping that is off (here: two layers' modulation biases swapped) is refused, not used."""
    import gpen.model.onnx_loading as loading

    real = loading.map_onnx_weights

    def swapped(*args, **kwargs):
        m = real(*args, **kwargs)
        a, b = "generator.convs.0.conv.modulation.bias", "generator.convs.2.conv.modulation.bias"
        m.state[a], m.state[b] = m.state[b], m.state[a]
        return m

    monkeypatch.setattr(loading, "map_onnx_weights", swapped)
    with caplog.at_level(logging.INFO, logger="gpen.model"):
        net = gpen.load_model(exports("official_legacy"))
    assert isinstance(net, OnnxGPEN)
    assert "do not reproduce the graph" in caplog.text and "exact layout" in caplog.text


def test_legacy_export_of_our_network_is_correct(tmp_path, small_net):
    """The TorchScript tracer cannot see writes into views: our network builds its output with cat then."""
    path = export(small_net, tmp_path / "ours_legacy.onnx", batch=1, size=64, dynamo=False, opset=17)
    ort = load_onnx_model(path, fast_path=False)
    x = batch(1)
    assert rel(ort(x), small_net(x)) <= ORT_TOL


@pytest.mark.parametrize("available, expected", [
    (["CUDAExecutionProvider", "CPUExecutionProvider"], [("CUDAExecutionProvider", {"device_id": 1}),
                                                         "CPUExecutionProvider"]),
    (["CPUExecutionProvider"], ["CPUExecutionProvider"]),
])
def test_cuda_provider_is_chosen_when_installed(tmp_path, monkeypatch, caplog, available, expected):
    """Provider choice for a CUDA device (no GPU here: a stand-in onnxruntime records the request)."""
    import gpen.model.onnx_graph as graph
    import gpen.model.onnx_runtime as runtime

    asked = []

    class FakeSession:
        def __init__(self, path, sess_options=None, providers=None):
            asked.append(providers)

        def get_providers(self):
            return [p if isinstance(p, str) else p[0] for p in asked[-1]]

    class FakeOrt:
        SessionOptions = type("SessionOptions", (), {})
        InferenceSession = FakeSession

        @staticmethod
        def get_available_providers():
            return available

    monkeypatch.setattr(runtime, "import_onnxruntime", lambda name: FakeOrt)
    sig = graph.GraphSignature("input", "output", 64, 1, np.float32)
    with caplog.at_level(logging.WARNING, logger="gpen.model"):
        model = runtime.OnnxGPEN(tmp_path / "GPEN-BFR-64.onnx", sig, torch.device("cuda:1"), torch.float16)
    assert asked == [expected]
    assert model.providers == [p if isinstance(p, str) else p[0] for p in expected]
    assert ("install onnxruntime-gpu" in caplog.text) == (len(available) == 1)


def test_moving_to_cuda_rebuilds_the_session_there(tmp_path, monkeypatch):
    """A model loaded on the offload device (CPU) runs on the GPU once moved there (stand-in
    onnxruntime: no GPU here), and moving it back drops the CUDA session (its GPU memory)."""
    import gpen.model.onnx_graph as graph
    import gpen.model.onnx_runtime as runtime

    built = []

    class FakeSession:
        def __init__(self, path, sess_options=None, providers=None):
            self.providers = [p if isinstance(p, str) else p[0] for p in providers]
            self.asked = providers
            built.append(self)

        def get_providers(self):
            return self.providers

        def run(self, names, feeds):
            return [next(iter(feeds.values())) * 0.5]

    class FakeOrt:
        SessionOptions = type("SessionOptions", (), {})
        InferenceSession = FakeSession

        @staticmethod
        def get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr(runtime, "import_onnxruntime", lambda name: FakeOrt)
    sig = graph.GraphSignature("input", "output", 64, None, np.float32)
    model = runtime.OnnxGPEN(tmp_path / "GPEN-BFR-64.onnx", sig, torch.device("cpu"), torch.float32)
    assert model.providers == ["CPUExecutionProvider"] and len(built) == 1
    cpu_session = model.session

    assert model.to("cuda:1") is model
    assert model.providers[0] == "CUDAExecutionProvider" and model.session is not cpu_session
    assert model.session.asked[0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert model.device == torch.device("cuda:1")
    model.to("cuda:1")  # already there: nothing is rebuilt
    assert len(built) == 2

    model.to(torch.device("cpu"))
    assert model.session is cpu_session and model.providers == ["CPUExecutionProvider"] and len(built) == 2
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.equal(model(x), x * 0.5)
    model.to("cuda:0")
    assert model.session.asked[0] == ("CUDAExecutionProvider", {"device_id": 0}) and len(built) == 3
