"""GPEN weights end to end: download (CLI and library), verify, load, restore, demo; ModelScope's files.

A seeded checkpoint in the full released GPEN-BFR-256 layout (18.9 M values, saved like the released
``.pth``) is served by a local HTTP server on 127.0.0.1 under a test registry entry (its own
sha256, computed here: no real hash is claimed). Nothing touches the internet.
"""

from __future__ import annotations

import hashlib
import io
import json

import cv2
import numpy as np
import pytest
import torch

from gpen.runs.cli import main
from gpen.errors import InvalidInputError
from gpen.model.layouts import seeded_state_dict
from gpen.model.loader import load_model
from gpen.model.network import GPENConfig
from gpen.pipeline.restorer import FaceRestorer
from gpen.weights import download as dl
from gpen.weights import models, paths, registry

from conftest import FIXTURES, astronaut, landmarks_of
from http_server import FileServer

NAME = "GPEN-BFR-256.pth"
SMALL_512 = FIXTURES / "reference" / "fixture_s512.pth"  # a narrow 512 px GPEN checkpoint (style_dim 64)


def _saved(obj, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


@pytest.fixture(scope="module")
def seeded():
    """The released 256 layout with seeded weights: its state dict, the released-style file bytes
    (legacy pickle format, as GPEN-BFR-*.pth are) and ModelScope-style bytes (torch.save's zip format)."""
    state = seeded_state_dict("GPEN-BFR-256", seed=7)
    pth = _saved(state, legacy=True)
    return {"state": state, "pth": pth, "sha": hashlib.sha256(pth).hexdigest(), "pt": _saved(state)}


@pytest.fixture()
def server(seeded):
    with FileServer() as srv:
        srv.add("/hf/GPEN-BFR-256.pth", seeded["pth"])
        srv.add("/ms/api/v1/models/damo/gpen/repo?Revision=master&FilePath=pytorch_model.pt", seeded["pt"])
        yield srv


@pytest.fixture(autouse=True)
def _isolated(tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv(paths.ENV_MODELS_DIR, str(tmp_path / "models"))
    monkeypatch.delenv(dl.ENV_OFFLINE, raising=False)
    monkeypatch.delenv(dl.ENV_MIRROR, raising=False)
    monkeypatch.setattr(dl, "LOCK_DIR", tmp_path_factory.mktemp("locks"))


def _entry(monkeypatch, *urls, sha=None, size=None, unhashed=(), name=NAME, model="GPEN-BFR-256"):
    spec = registry.WeightsFile(name, "facerestore_models", tuple(urls), sha256=sha, size=size,
                                unhashed=tuple(unhashed), model=model, origin="test")
    monkeypatch.setitem(registry.REGISTRY, name, spec)
    return spec


def _hf_entry(monkeypatch, server, seeded):
    return _entry(monkeypatch, server.url("/hf/GPEN-BFR-256.pth"), sha=seeded["sha"], size=len(seeded["pth"]))


def _models_dir():
    return paths.models_dir("facerestore_models")


def _same_weights(net, state) -> bool:
    return all(torch.equal(v, state[k]) for k, v in net.state_dict().items() if k in state)


# ---------------------------------------------------------------- the released layout, downloaded


def test_download_of_the_released_layout_is_kept_and_loads(monkeypatch, server, seeded):
    _hf_entry(monkeypatch, server, seeded)
    path = models.download_model("GPEN-BFR-256", progress=False)
    assert path == _models_dir() / NAME and path.read_bytes() == seeded["pth"]
    net = load_model(path)
    assert net.size == 256 and _same_weights(net, seeded["state"])
    assert sorted(p.name for p in _models_dir().iterdir()) == [NAME]


def test_cli_download_then_restore_with_the_downloaded_model(monkeypatch, server, seeded, tmp_path, capsys):
    _hf_entry(monkeypatch, server, seeded)
    assert main(["-q", "download", "GPEN-BFR-256"]) == 0
    assert (_models_dir() / NAME).read_bytes() == seeded["pth"]
    img = (astronaut()[0].numpy() * 255).round().astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img[:, :, ::-1])
    lm = landmarks_of("skimage.data.astronaut")
    (tmp_path / "lm.json").write_text(json.dumps({"images": {"a.png": {"faces": [{"landmarks5": lm[0].tolist()}]}}}))
    assert main(["-q", "restore", str(tmp_path / "a.png"), "--model", "GPEN-BFR-256", "-o", str(tmp_path / "out"),
                 "--landmarks", str(tmp_path / "lm.json"), "--device", "cpu"]) == 0
    assert len(server.gets("/hf/GPEN-BFR-256.pth")) == 1  # restore used the file on disk
    # the CLI's output is what the library computes with the same weights
    expected = FaceRestorer(load_model(seeded["state"])).restore(torch.from_numpy(img[None] / 255.0).float(), [lm])
    want = (expected.images[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    got = cv2.imread(str(tmp_path / "out" / "a.png"))[:, :, ::-1]
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert np.abs(got.astype(int) - img.astype(int)).max() > 50  # the face was changed (random weights)


def test_restore_downloads_a_missing_released_model(monkeypatch, server, seeded, tmp_path):
    _hf_entry(monkeypatch, server, seeded)
    cv2.imwrite(str(tmp_path / "a.png"), np.full((64, 64, 3), 128, np.uint8))
    (tmp_path / "lm.json").write_text(json.dumps({"images": {"a.png": {"faces": []}}}))
    assert main(["-q", "restore", str(tmp_path / "a.png"), "--model", "GPEN-BFR-256", "-o", str(tmp_path / "out"),
                 "--landmarks", str(tmp_path / "lm.json"), "--device", "cpu"]) == 0
    assert (_models_dir() / NAME).read_bytes() == seeded["pth"]


def test_demo_downloads_and_restores_with_the_model(monkeypatch, server, seeded, tmp_path):
    import gpen.pipeline.restorer

    used = []

    class TwoFaces(FaceRestorer):  # the demo's 29 faces take minutes on a shared CPU: restore two of them
        def restore(self, images, landmarks=None, **kw):
            used.append(self.restorer)
            return super().restore(images, [landmarks[0][:2]], **kw)

    monkeypatch.setattr(gpen.pipeline.restorer, "FaceRestorer", TwoFaces)
    _hf_entry(monkeypatch, server, seeded)
    assert main(["-q", "demo", "--model", "GPEN-BFR-256", "-o", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    assert (_models_dir() / NAME).is_file()
    assert len(used) == 1 and _same_weights(used[0], seeded["state"])  # the downloaded weights, not random ones
    outputs = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert outputs == ["solvay_conference_1927.png", "solvay_conference_1927_mask.png"]  # not a "_pipeline-check"


# ---------------------------------------------------------------- ModelScope's files


def test_modelscope_file_is_accepted_on_its_layout(monkeypatch, server, seeded):
    ms = server.url("/ms/api/v1/models/damo/gpen/repo?Revision=master&FilePath=pytorch_model.pt")
    _entry(monkeypatch, server.url("/hf/gone.pth"), ms, sha=seeded["sha"], size=len(seeded["pth"]), unhashed=[ms])
    path = models.download_model("GPEN-BFR-256", progress=False)
    assert path.name == NAME and path.read_bytes() == seeded["pt"]  # another serialisation: no hash applies
    assert _same_weights(load_model(path), seeded["state"])


def test_a_file_of_another_layout_is_rejected_and_deleted(monkeypatch, server):
    wrong = server.add("/ms/wrong.pt", SMALL_512.read_bytes())
    _entry(monkeypatch, wrong, unhashed=[wrong])
    with pytest.raises(Exception, match="does not have the layout of the released GPEN-BFR-256") as err:
        models.download_model("GPEN-BFR-256", progress=False)
    assert "deleted the downloaded file" in str(err.value)
    assert list(_models_dir().iterdir()) == []


@pytest.mark.parametrize("size, narrow, file_name", [(1024, 1 / 32, "pytorch_model.pt"),
                                                     (2048, 1 / 16, "pytorch_model-2048.pt")])
def test_modelscope_plain_state_dict_loads_with_its_size(tmp_path, size, narrow, file_name):
    # ModelScope's pipeline: torch.load(pytorch_model.pt, weights_only=True) into FullGenerator, strict
    state = seeded_state_dict(GPENConfig(size=size, style_dim=64, n_mlp=2, narrow=narrow), seed=3)
    torch.save(state, tmp_path / file_name)
    net = load_model(tmp_path / file_name)
    assert net.size == size and _same_weights(net, state)


def test_modelscope_trainer_checkpoint_loads_its_ema_generator(tmp_path):
    # ModelScope's trainer saves {"meta", "state_dict", "optimizer"} of its ImagePortraitEnhancement
    # model, whose state dict holds generator.*, g_ema.* (FullGenerator each) and discriminator.*
    cfg = GPENConfig(size=256, style_dim=64, n_mlp=2, narrow=1 / 16)
    gen, ema = seeded_state_dict(cfg, seed=1), seeded_state_dict(cfg, seed=2)
    state = {**{f"generator.{k}": v for k, v in gen.items()}, **{f"g_ema.{k}": v for k, v in ema.items()},
             "discriminator.convs.0.0.weight": torch.randn(8, 3, 1, 1), "discriminator.final_linear.1.bias": torch.zeros(1)}
    checkpoint = {"meta": {"modelscope": "1.9.0", "time": "Mon Jan  1 00:00:00 2024"}, "state_dict": state,
                  "optimizer": {"generator": {"state": {}, "param_groups": [{"lr": 0.002, "params": [0, 1]}]}}}
    torch.save(checkpoint, tmp_path / "epoch_10.pth")
    net = load_model(tmp_path / "epoch_10.pth")
    assert net.size == 256 and _same_weights(net, ema) and not _same_weights(net, gen)


# ---------------------------------------------------------------- command line


def test_list_prints_one_line_per_known_file(capsys):
    assert main(["download", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(registry.REGISTRY)
    for line, spec in zip(lines, registry.REGISTRY.values()):
        assert line.startswith(spec.name + " ")
        assert (f"{spec.size:,} bytes" if spec.size else "size not published") in line
        assert (spec.sha256 or "sha256 not published") in line
        assert all(u in line for u in spec.urls)
        modelscope = [u for u in spec.unhashed if u.startswith("https://modelscope.cn/api/v1/models/")]
        assert line.count("(sha256 from the source's manifest)") == len(modelscope)
        assert line.count("(layout-checked)") == len(spec.unhashed) - len(modelscope)


def test_all_downloads_every_released_pth(monkeypatch, server, seeded, capsys):
    _hf_entry(monkeypatch, server, seeded)
    for n in (512, 1024, 2048):
        _entry(monkeypatch, server.url(f"/gone/{n}.pth"), name=f"GPEN-BFR-{n}.pth", model=f"GPEN-BFR-{n}")
    assert main(["-q", "download", "--all"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # per file: what and where, then its one source
    assert len(err) == 6 and all(f"GPEN-BFR-{n}.pth" in e for n, e in zip((512, 1024, 2048), err[::2]))
    assert all(e.startswith("error: ") and "put the file in" in e for e in err[::2])
    assert all(e.startswith("  http") and "HTTP 404" in e for e in err[1::2])
    assert sorted(p.name for p in _models_dir().iterdir()) == [NAME]
    assert [p for p, _ in server.requests] == ["/hf/GPEN-BFR-256.pth", "/gone/512.pth", "/gone/1024.pth",
                                               "/gone/2048.pth"]


def test_onnx_flag_picks_the_onnx_export(monkeypatch, server, tmp_path):
    assert models.files_for("GPEN-BFR-512", onnx=True).name == "GPEN-BFR-512.onnx"  # ReActor's
    assert models.files_for("GPEN-BFR-256", onnx=True).name == "gpen_bfr_256.onnx"  # only FaceFusion has a 256
    assert models.files_for("gpen_bfr_1024").name == "gpen_bfr_1024.onnx"
    assert models.files_for("GPEN-BFR-2048").name == "GPEN-BFR-2048.pth"
    with pytest.raises(InvalidInputError, match="--url"):
        models.files_for("GFPGANv1.4")
    data = b"an onnx export" * 1000
    url = server.add("/reactor/GPEN-BFR-512.onnx", data)
    _entry(monkeypatch, url, sha=hashlib.sha256(data).hexdigest(), size=len(data), name="GPEN-BFR-512.onnx",
           model="GPEN-BFR-512")
    assert main(["-q", "download", "GPEN-BFR-512", "--onnx", "--dir", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "GPEN-BFR-512.onnx").read_bytes() == data


def test_download_from_any_url_checks_the_gpen_layout_and_sha256(server, tmp_path, capsys):
    data = SMALL_512.read_bytes()
    url = server.add("/somewhere/my_gpen.pth", data)
    dest = tmp_path / "d"
    assert main(["-q", "download", "--url", url, "--sha256", "0" * 64, "--dir", str(dest)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "could not be downloaded" in err[0] and str(dest) in err[0]
    assert err[1].strip().startswith(f"{url}: sha256 mismatch")
    assert main(["-q", "download", "--url", url, "--sha256", hashlib.sha256(data).hexdigest(), "--dir", str(dest)]) == 0
    assert (dest / "my_gpen.pth").read_bytes() == data
    not_gpen = server.add("/somewhere/other.pth", _saved({"conv_first.weight": torch.zeros(4, 3, 3, 3)}))
    assert main(["-q", "download", "--url", not_gpen, "--dir", str(dest)]) == 2
    assert "not a GPEN checkpoint" in capsys.readouterr().err and not (dest / "other.pth").exists()
    ms = server.add("/api/v1/models/x/y/repo?Revision=master&FilePath=pytorch_model-2048.pt", data)
    assert main(["-q", "download", "--url", ms, "--dir", str(dest)]) == 0
    assert (dest / "pytorch_model-2048.pt").read_bytes() == data  # the name comes from FilePath=


def test_url_without_a_file_name_asks_for_one():
    with pytest.raises(InvalidInputError, match="--name"):
        models.file_name_from_url("https://example.invalid/download?id=3")
    assert models.file_name_from_url("https://h/a/GPEN%20512.pth?download=true") == "GPEN 512.pth"
