"""Safe loading: containers, formats, config inference, and a clear error for every bad file."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch
from safetensors.torch import save_file

import gpen
from gpen.errors import MissingWeightsError, ModelLoadError
from gpen.model.layouts import RELEASED_MODELS, released_layout, seeded_state_dict
from gpen.model.network import GPENConfig

from conftest import SHARED_REFERENCE, needs_shared

SMALL = GPENConfig(size=64, style_dim=32, n_mlp=2, channel_multiplier=2, narrow=0.0625)


@pytest.fixture(scope="module")
def small_state() -> dict:
    return seeded_state_dict(SMALL, seed=1)


def outputs_equal(a: torch.nn.Module, b: torch.nn.Module, size: int) -> bool:
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        return torch.equal(a(x), b(x))


@pytest.mark.parametrize("name", RELEASED_MODELS)
def test_released_layouts_load_with_inferred_config(name):
    layout = released_layout(name)
    net = gpen.load_model(seeded_state_dict(name, seed=2))
    c, want = net.config, layout["config"]
    assert (c.size, c.style_dim, c.n_mlp) == (want.size, want.style_dim, want.n_mlp)
    assert (c.channel_multiplier, c.narrow) == (want.channel_multiplier, want.narrow)
    assert c.channels == want.channels
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == layout["shapes"]
    assert not net.training and not any(p.requires_grad for p in net.parameters())


@needs_shared
@pytest.mark.parametrize("name", RELEASED_MODELS)
def test_bundled_layouts_equal_shared_reference(name):
    shared = json.loads((SHARED_REFERENCE / f"layout_{name}.json").read_text())
    assert released_layout(name)["shapes"] == {k: tuple(s) for k, s in shared["keys"]}
    assert sum(torch.Size(s).numel() for _, s in shared["keys"]) == shared["num_values"]


def test_config_never_comes_from_the_file_name(tmp_path, small_state):
    path = tmp_path / "GPEN-BFR-2048.pth"  # misleading name: the weights say 64 px
    torch.save(small_state, path)
    net = gpen.load_model(path)
    assert net.size == 64 and net.config.style_dim == 32 and net.config.n_mlp == 2


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"params_ema": sd},
    lambda sd: {"g_ema": sd, "g": {}, "d": {}},
    lambda sd: {"state_dict": sd, "epoch": 3},
    lambda sd: {"params": sd},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
])
def test_containers_are_unwrapped(tmp_path, small_state, wrap):
    path = tmp_path / "model.pth"
    torch.save(wrap(small_state), path)
    assert outputs_equal(gpen.load_model(path), gpen.load_model(small_state), 64)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".ckpt", ".safetensors"])
def test_file_formats(tmp_path, small_state, suffix):
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file(small_state, str(path))
    else:
        torch.save(small_state, path)
    assert outputs_equal(gpen.load_model(path), gpen.load_model(small_state), 64)


def test_half_precision_files_and_missing_kernels(small_state):
    half = {k: v.half() for k, v in small_state.items() if not k.endswith("kernel")}
    net = gpen.load_model(half)
    assert net.dtype == torch.float32
    for key, value in net.state_dict().items():
        if key.endswith("kernel"):
            assert torch.equal(value, small_state[key])


def test_dtype_names(small_state):
    assert gpen.load_model(small_state, dtype="fp16").dtype == torch.float16
    assert gpen.load_model(small_state, dtype="bf16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp32, fp16, bf16"):
        gpen.load_model(small_state, dtype="int8")


def test_state_dict_source_is_not_modified(small_state):
    before = {k: v.clone() for k, v in small_state.items()}
    gpen.load_model(small_state, dtype=torch.float16)
    assert all(torch.equal(before[k], v) for k, v in small_state.items())


# ---- bad files: one test per message -------------------------------------------------------------

def error_of(source) -> str:
    with pytest.raises(ModelLoadError) as info:
        gpen.load_model(source)
    return str(info.value)


@pytest.mark.parametrize("keys, arch", [
    (["conv_body_first.weight", "stylegan_decoder.style_mlp.1.weight"], "GFPGAN"),
    (["encoder.blocks.0.weight", "quantize.embedding.weight", "fuse_convs_dict.64.scale.0.weight"], "CodeFormer"),
    (["body.0.rdb1.conv1.weight", "conv_first.weight"], "ESRGAN"),
    (["body.conv1.weight", "ClassHead.0.conv1x1.weight"], "RetinaFace"),
    (["style.1.weight", "convs.0.conv.weight", "to_rgb1.conv.weight"], "StyleGAN2"),
])
def test_not_a_gpen_checkpoint_names_the_architecture(tmp_path, keys, arch):
    path = tmp_path / "other_model.pth"
    torch.save({k: torch.zeros(2, 2) for k in keys}, path)
    msg = error_of(path)
    assert "other_model.pth" in msg and "not a GPEN checkpoint" in msg and arch in msg


def test_unknown_tensors_are_not_gpen(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"foo.weight": torch.zeros(3)}, str(path))
    assert "x.safetensors: not a GPEN checkpoint" in error_of(path)


def test_missing_tensors_are_counted(tmp_path, small_state):
    partial = {k: v for k, v in small_state.items() if not k.startswith("generator.convs.3.")}
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    msg = error_of(path)
    assert "partial.pth" in msg and "missing 5 tensors" in msg and "generator.convs.3." in msg


def test_wrong_shape_is_reported(small_state):
    bad = dict(small_state)
    bad["generator.convs.0.conv.weight"] = torch.zeros(1, 8, 8, 3, 3)
    msg = error_of(bad)
    assert "wrong shape" in msg and "generator.convs.0.conv.weight" in msg


def test_extra_tensors_are_reported(small_state):
    msg = error_of({**small_state, "discriminator.weight": torch.zeros(1)})
    assert "do not belong to a GPEN-64 network" in msg and "discriminator.weight" in msg


def test_nan_weights_are_corrupt(small_state):
    bad = dict(small_state)
    bad["final_linear.0.bias"] = torch.full_like(bad["final_linear.0.bias"], float("nan"))
    assert "NaN" in error_of(bad)


def test_truncated_file(tmp_path, small_state):
    path = tmp_path / "GPEN-BFR-512.pth"
    torch.save(small_state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = error_of(path)
    assert "GPEN-BFR-512.pth" in msg and "truncated or corrupt file" in msg


def test_truncated_safetensors(tmp_path, small_state):
    path = tmp_path / "m.safetensors"
    save_file(small_state, str(path))
    path.write_bytes(path.read_bytes()[:1000])
    assert "truncated or corrupt file" in error_of(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())
    msg = error_of(path)
    assert "noise.pth" in msg and "truncated or corrupt file" in msg


def test_random_bytes_in_a_zip(tmp_path):
    path = tmp_path / "zipped.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x04garbage")
    assert "truncated or corrupt file" in error_of(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.touch()
    msg = error_of(path)
    assert "empty.pth" in msg and "empty (0 bytes)" in msg


def test_onnx_garbage_is_corrupt(tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "GPEN-BFR-512.onnx"
    path.write_bytes(b"\x08\x07")
    msg = error_of(path)
    assert "GPEN-BFR-512.onnx" in msg and "truncated or corrupt" in msg


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text("hello")
    assert "unsupported file type '.txt'" in error_of(path)


class _Payload:
    # exec, not print: Ray Data replaces builtins.print in the test process (tests/test_distributed.py)
    def __reduce__(self):
        return (exec, ("print('pickled code ran')",))


def test_pickled_code_is_never_executed(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"x": _Payload()}, path)
    msg = error_of(path)
    assert "evil.pth" in msg and "never does" in msg and "references" in msg and "exec" in msg
    assert "pickled code ran" not in capsys.readouterr().out


def test_missing_file():
    with pytest.raises(MissingWeightsError, match="not found"):
        gpen.load_model("/nonexistent/GPEN-BFR-512.pth")


def test_no_tensors(tmp_path):
    path = tmp_path / "cfg.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    assert "not a GPEN checkpoint" in error_of(path)
