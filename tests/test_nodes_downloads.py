"""The loader's downloads (nodes/downloads.py) with stand-ins for ComfyUI's ``folder_paths`` and
``comfy.utils.ProgressBar``: the model list offers released files not on disk, choosing one downloads
it with the progress bar and ends in a loaded model, and the detector's download reports to the bar.

``nodes/`` imports the core relatively (``..gpen``), as inside ComfyUI, so the repository is loaded
here as a package of its own (without running its root ``__init__``); the test patches that copy's
registry. Downloads come from a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from http_server import FileServer

REPO = Path(__file__).resolve().parents[1]
PACK = "gpen_pack_downloads_under_test"
NAME = "GPEN-BFR-256.pth"


class Bar:
    """Stand-in for comfy.utils.ProgressBar: records its total and every update."""

    made: list[Bar] = []

    def __init__(self, total, node_id=None):
        self.total, self.updates = total, []
        Bar.made.append(self)

    def update_absolute(self, value, total=None, preview=None):
        self.updates.append((value, total))


def _folder_paths(models: Path) -> types.ModuleType:
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(models)
    fp.folder_names_and_paths = {}

    def get_folder_paths(name):
        return list(fp.folder_names_and_paths[name][0])

    def get_filename_list(name):
        folders, exts = fp.folder_names_and_paths[name]
        return sorted(f for d in folders if os.path.isdir(d) for f in os.listdir(d)
                      if os.path.splitext(f)[1].lower() in exts)

    def get_full_path(name, filename):
        for d in fp.folder_names_and_paths.get(name, ([], ()))[0]:
            if os.path.isfile(os.path.join(d, filename)):
                return os.path.join(d, filename)
        return None

    fp.get_folder_paths, fp.get_filename_list, fp.get_full_path = get_folder_paths, get_filename_list, get_full_path
    return fp


@pytest.fixture(scope="module")
def seeded():
    from gpen.model.layouts import seeded_state_dict

    state = seeded_state_dict("GPEN-BFR-256", seed=11)
    buf = io.BytesIO()
    torch.save(state, buf)
    return state, buf.getvalue()


@pytest.fixture()
def pack(tmp_path, tmp_path_factory, monkeypatch):
    """The pack as ComfyUI imports it, with stand-in host modules; yields its ``nodes.downloads``."""
    models = tmp_path / "models"
    (models / "facerestore_models").mkdir(parents=True)
    monkeypatch.setitem(sys.modules, "folder_paths", _folder_paths(models))
    comfy, utils = types.ModuleType("comfy"), types.ModuleType("comfy.utils")
    comfy.__path__, comfy.utils, utils.ProgressBar = [], utils, Bar
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.utils", utils)
    root = types.ModuleType(PACK)
    root.__path__ = [str(REPO)]
    monkeypatch.setitem(sys.modules, PACK, root)
    monkeypatch.setenv("GPEN_MODELS_DIR", str(models))
    monkeypatch.delenv("GPEN_OFFLINE", raising=False)
    monkeypatch.delenv("GPEN_MIRROR", raising=False)
    Bar.made = []
    downloads = importlib.import_module(f"{PACK}.nodes.downloads")
    monkeypatch.setattr(sys.modules[f"{PACK}.gpen.weights.download"], "LOCK_DIR", tmp_path_factory.mktemp("locks"))
    yield downloads
    for name in [m for m in sys.modules if m == PACK or m.startswith(PACK + ".")]:
        del sys.modules[name]


def _core(name: str):
    return importlib.import_module(f"{PACK}.gpen.{name}")


def _register(monkeypatch, name, url, data, kind="facerestore_models", model="GPEN-BFR-256"):
    registry = _core("weights.registry")
    spec = registry.WeightsFile(name, kind, (url,), sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                                model=model, origin="test")
    monkeypatch.setitem(registry.REGISTRY, name, spec)
    return spec


def test_model_list_offers_released_files_not_on_disk(pack):
    folder = Path(sys.modules["folder_paths"].models_dir) / "facerestore_models"
    (folder / "GPEN-BFR-512.pth").write_bytes(b"x")
    (folder / "mine.safetensors").write_bytes(b"x")
    folders = importlib.import_module(f"{PACK}.nodes.folders")
    names = pack.restore_model_names()
    mark = pack.DOWNLOAD_MARK
    assert names[:2] == ["GPEN-BFR-512.pth", "mine.safetensors"]  # what is on disk comes first
    assert names[2:5] == [f"GPEN-BFR-{n}.pth{mark}" for n in (1024, 2048, 256)]
    offered = {n.removesuffix(mark) for n in names[2:]}
    assert all(n.endswith(mark) for n in names[2:]) and "GPEN-BFR-512.pth" not in offered
    assert offered == {f.name for f in _core("weights.registry").gpen_files()} - {"GPEN-BFR-512.pth"}
    assert folders.restore_model_files() == ["GPEN-BFR-512.pth", "mine.safetensors"]


def test_choosing_a_marked_entry_downloads_with_progress_and_loads(pack, monkeypatch, seeded):
    state, data = seeded
    with FileServer() as srv:
        _register(monkeypatch, NAME, srv.add("/GPEN-BFR-256.pth", data), data)
        path = pack.fetch_requested(NAME + pack.DOWNLOAD_MARK)
        assert len(srv.gets("/GPEN-BFR-256.pth")) == 1
        assert pack.fetch_requested(NAME + pack.DOWNLOAD_MARK) == path  # there now: no second download
        assert len(srv.gets("/GPEN-BFR-256.pth")) == 1
    assert path == os.path.join(sys.modules["folder_paths"].models_dir, "facerestore_models", NAME)
    (bar,) = Bar.made
    values = [v for v, _ in bar.updates]
    assert bar.total == len(data) and values == sorted(values) and bar.updates[-1] == (len(data), len(data))
    assert 2 <= len(values) <= 101  # about once per percent
    net = _core("model.loader").load_model(path)
    assert net.size == 256
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert pack.fetch_requested(NAME) is None  # an unmarked name is the user's own file


def test_download_failure_names_file_urls_and_folder(pack, monkeypatch):
    monkeypatch.setenv("GPEN_OFFLINE", "1")
    with pytest.raises(_core("errors").MissingWeightsError) as err:
        pack.fetch_requested("GPEN-BFR-2048.pth" + pack.DOWNLOAD_MARK)
    msg = str(err.value)
    folder = os.path.join(sys.modules["folder_paths"].models_dir, "facerestore_models")
    assert "GPEN-BFR-2048.pth" in msg and folder in msg and "GPEN_OFFLINE" in msg
    assert all(u in msg for u in _core("weights.registry").REGISTRY["GPEN-BFR-2048.pth"].urls)
    with pytest.raises(_core("errors").MissingWeightsError, match="not a released GPEN file"):
        pack.fetch_requested("GFPGANv1.4.pth" + pack.DOWNLOAD_MARK)


def test_detector_download_reports_to_the_progress_bar(pack, monkeypatch):
    detect = _core("faces.detect")
    net = detect.build_retinaface("mobile0.25")
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save({k: torch.randn_like(v) if v.is_floating_point() else v for k, v in net.state_dict().items()}, buf)
    data = buf.getvalue()
    name = "detection_mobilenet0.25_Final.pth"
    pack.install_download_progress()
    try:
        with FileServer() as srv:
            _register(monkeypatch, name, srv.add("/" + name, data), data, kind="facedetection", model=None)
            detector = detect.FaceDetector("retinaface_mobile0.25")  # downloads its weights itself
    finally:
        _core("weights.download").set_progress_reporter(None)
    assert detector is not None
    (bar,) = Bar.made
    assert bar.total == len(data) and bar.updates[-1] == (len(data), len(data))


def test_progress_updates_at_most_once_per_percent(pack):
    made = []

    class Recorder:
        def __init__(self, total):
            self.total, self.updates = total, []
            made.append(self)

        def update_absolute(self, value, total=None):
            self.updates.append(value)

    progress = pack.ComfyProgress("f", Recorder)
    progress(0, None)  # unknown total: nothing to draw
    assert made == []
    for done in range(0, 100_001, 7):
        progress(done, 100_000)
    progress(100_000, 100_000)
    (bar,) = made
    assert bar.total == 100_000 and len(bar.updates) <= 102 and bar.updates[-1] == 100_000
