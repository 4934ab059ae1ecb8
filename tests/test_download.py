"""Model folder lookup (gpen.weights.paths) and the verified downloader (gpen.weights.download).

Downloads are exercised against a local HTTP server on 127.0.0.1; nothing here touches the internet.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from gpen.weights import download as dl
from gpen.weights import registry
from gpen.weights import paths
from gpen.errors import GPENError, InvalidInputError, MissingWeightsError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, not all one value
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server API)
        if self.path == "/good.pth":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/truncated.pth":
            # Announces the full length, sends half, then closes the connection.
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/short-nolength.pth":
            # No Content-Length: only the registry's expected size can reveal the short file.
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
            self.close_connection = True
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _isolated_models(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ENV_MODELS_DIR, str(tmp_path / "models"))
    monkeypatch.delenv(dl.ENV_OFFLINE, raising=False)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _spec(*urls, sha256=None, size=None, name="test_weights.pth"):
    return registry.WeightsFile(name, "facedetection", tuple(urls), sha256=sha256, size=size)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------- paths


def test_env_var_sets_models_root(tmp_path):
    assert paths.models_dir("facerestore_models") == tmp_path / "models" / "facerestore_models"
    assert paths.models_dir("facedetection") == tmp_path / "models" / "facedetection"


def test_unknown_kind_is_rejected():
    with pytest.raises(InvalidInputError, match="facerestore_models"):
        paths.models_dir("checkpoints")


def test_comfyui_install_is_detected(tmp_path, monkeypatch):
    comfy = tmp_path / "ComfyUI"
    pack = comfy / "custom_nodes" / "ComfyUI-GPEN"
    pack.mkdir(parents=True)
    (comfy / "models").mkdir()
    (comfy / "folder_paths.py").write_text("")
    assert paths.find_comfyui_models_root(pack) == comfy / "models"

    monkeypatch.delenv(paths.ENV_MODELS_DIR)
    monkeypatch.setattr(paths, "PACK_ROOT", pack)
    assert paths.models_dir("facedetection") == comfy / "models" / "facedetection"


def test_comfyui_base_directory_layout_is_detected(tmp_path):
    # ``main.py --base-directory DIR``: DIR holds custom_nodes/ and models/, not ComfyUI's code.
    base = tmp_path / "base"
    pack = base / "custom_nodes" / "pack"
    pack.mkdir(parents=True)
    (base / "models").mkdir()
    assert paths.find_comfyui_models_root(pack) == base / "models"


def test_outside_comfyui_defaults_to_pack_models(tmp_path, monkeypatch):
    pack = tmp_path / "somewhere" / "ComfyUI-GPEN"
    pack.mkdir(parents=True)
    (tmp_path / "somewhere" / "models").mkdir()  # a models/ folder alone is not ComfyUI
    assert paths.find_comfyui_models_root(pack) is None
    monkeypatch.delenv(paths.ENV_MODELS_DIR)
    monkeypatch.setattr(paths, "PACK_ROOT", pack)
    assert paths.models_dir("facerestore_models") == pack / "models" / "facerestore_models"


def test_find_weights_searches_extra_dirs_first(tmp_path):
    extra = tmp_path / "comfy_registered"
    extra.mkdir()
    default = paths.models_dir("facerestore_models")
    default.mkdir(parents=True)
    (default / "GPEN-BFR-512.pth").write_bytes(b"default")
    assert paths.find_weights("GPEN-BFR-512.pth", "facerestore_models", [extra]) == default / "GPEN-BFR-512.pth"
    (extra / "GPEN-BFR-512.pth").write_bytes(b"extra")
    assert paths.find_weights("GPEN-BFR-512.pth", "facerestore_models", [str(extra)]) == extra / "GPEN-BFR-512.pth"
    assert paths.find_weights("GPEN-BFR-1024.pth", "facerestore_models", [extra]) is None


# ---------------------------------------------------------------- registry


def test_registry_holds_the_expected_files():
    gpen_files = {f"GPEN-BFR-{n}.pth" for n in (256, 512, 1024, 2048)}
    facexlib_files = {
        "detection_Resnet50_Final.pth",
        "detection_mobilenet0.25_Final.pth",
        "parsing_parsenet.pth",
        "parsing_bisenet.pth",
    }
    assert set(registry.REGISTRY) == gpen_files | facexlib_files
    for name in gpen_files:
        assert registry.REGISTRY[name].kind == "facerestore_models"
        assert registry.REGISTRY[name].urls[0] == (
            f"https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/{name}"
        )
    for name in facexlib_files:
        assert registry.REGISTRY[name].kind == "facedetection"
        assert registry.REGISTRY[name].urls[0].startswith("https://github.com/xinntao/facexlib/releases/download/")
        assert registry.REGISTRY[name].urls[0].endswith("/" + name)
    for f in registry.REGISTRY.values():
        assert f.sha256 is None or (len(f.sha256) == 64 and int(f.sha256, 16) >= 0)


def test_unknown_name_is_rejected():
    with pytest.raises(InvalidInputError, match="not a known"):
        dl.download("nonexistent.pth")


# ---------------------------------------------------------------- download


def test_successful_download(server, tmp_path):
    spec = _spec(server + "/good.pth", sha256=PAYLOAD_SHA, size=len(PAYLOAD))
    seen = []
    out = dl.download(spec, tmp_path / "dest", progress=False, validate=lambda p: seen.append(p.name))
    assert out == tmp_path / "dest" / "test_weights.pth"
    assert out.read_bytes() == PAYLOAD
    assert seen == ["test_weights.pth.part"]  # the hook sees the file before it is moved into place
    assert _leftovers(tmp_path / "dest") == ["test_weights.pth"]


def test_default_destination_is_kind_folder(server):
    out = dl.download(_spec(server + "/good.pth"), progress=False)
    assert out == paths.models_dir("facedetection") / "test_weights.pth"
    assert out.read_bytes() == PAYLOAD


def test_truncated_download_leaves_nothing(server, tmp_path):
    spec = _spec(server + "/truncated.pth")
    with pytest.raises(MissingWeightsError) as err:
        dl.download(spec, tmp_path, progress=False)
    msg = str(err.value)
    assert "test_weights.pth" in msg and "incomplete" in msg and str(tmp_path) in msg
    assert _leftovers(tmp_path) == []


def test_wrong_size_without_content_length(server, tmp_path):
    spec = _spec(server + "/short-nolength.pth", size=len(PAYLOAD))
    with pytest.raises(MissingWeightsError, match="wrong size: 1000 bytes"):
        dl.download(spec, tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


def test_announced_size_mismatch_is_rejected_before_transfer(server, tmp_path):
    spec = _spec(server + "/good.pth", size=len(PAYLOAD) + 1)
    with pytest.raises(MissingWeightsError, match="announces"):
        dl.download(spec, tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


def test_hash_mismatch(server, tmp_path):
    spec = _spec(server + "/good.pth", sha256="0" * 64, size=len(PAYLOAD))
    with pytest.raises(MissingWeightsError, match="sha256 mismatch") as err:
        dl.download(spec, tmp_path, progress=False)
    assert PAYLOAD_SHA in str(err.value)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("hook_result", ["raise", False])
def test_validate_hook_failure(server, tmp_path, hook_result):
    def validate(path):
        if hook_result == "raise":
            raise GPENError("not a GPEN checkpoint: missing generator.style.1.weight")
        return False

    with pytest.raises(MissingWeightsError, match="failed validation") as err:
        dl.download(_spec(server + "/good.pth"), tmp_path, progress=False, validate=validate)
    if hook_result == "raise":
        assert "generator.style.1.weight" in str(err.value)
    assert _leftovers(tmp_path) == []


def test_falls_back_to_next_url(server, tmp_path):
    spec = _spec(server + "/missing.pth", server + "/truncated.pth", server + "/good.pth", sha256=PAYLOAD_SHA)
    out = dl.download(spec, tmp_path, progress=False)
    assert out.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path) == ["test_weights.pth"]


def test_existing_file_is_replaced_only_by_a_verified_one(server, tmp_path):
    (tmp_path / "test_weights.pth").write_bytes(b"old")
    with pytest.raises(MissingWeightsError):
        dl.download(_spec(server + "/good.pth", sha256="1" * 64), tmp_path, progress=False)
    assert (tmp_path / "test_weights.pth").read_bytes() == b"old"


def test_unreachable_host_fails_fast_with_clear_message(tmp_path, monkeypatch):
    timeouts = []
    real_urlopen = dl.urllib.request.urlopen

    def spy(req, timeout=None):
        timeouts.append(timeout)
        return real_urlopen(req, timeout=timeout)

    monkeypatch.setattr(dl.urllib.request, "urlopen", spy)
    url = f"http://127.0.0.1:{_closed_port()}/weights/test_weights.pth"
    with pytest.raises(MissingWeightsError) as err:
        dl.download(_spec(url), tmp_path / "facedetection", progress=False)
    msg = str(err.value)
    assert "test_weights.pth" in msg and url in msg and str(tmp_path / "facedetection") in msg
    assert "cannot connect" in msg
    assert timeouts and all(t is not None and t <= 10 for t in timeouts)
    assert _leftovers(tmp_path / "facedetection") == []


def test_offline_env_forbids_download(server, tmp_path, monkeypatch):
    monkeypatch.setenv(dl.ENV_OFFLINE, "1")
    with pytest.raises(MissingWeightsError, match=dl.ENV_OFFLINE):
        dl.download(_spec(server + "/good.pth"), tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------- ensure_weights


def test_ensure_weights_prefers_existing_file(tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "parsing_parsenet.pth").write_bytes(b"x")
    monkeypatch.setattr(dl, "download", lambda *a, **k: pytest.fail("must not download"))
    assert dl.ensure_weights("parsing_parsenet.pth", "facedetection", [extra]) == extra / "parsing_parsenet.pth"


def test_ensure_weights_downloads_into_kind_folder(server):
    spec = _spec(server + "/good.pth", sha256=PAYLOAD_SHA)
    out = dl.ensure_weights(spec, "facedetection", progress=False)
    assert out == paths.models_dir("facedetection") / spec.name
    assert out.read_bytes() == PAYLOAD


def test_ensure_weights_without_download_names_file_url_and_folders(tmp_path):
    extra = tmp_path / "extra"
    with pytest.raises(MissingWeightsError) as err:
        dl.ensure_weights("GPEN-BFR-2048.pth", "facerestore_models", [extra], allow_download=False)
    msg = str(err.value)
    assert "GPEN-BFR-2048.pth" in msg
    assert registry.REGISTRY["GPEN-BFR-2048.pth"].urls[0] in msg
    assert str(extra) in msg and str(paths.models_dir("facerestore_models")) in msg
    assert isinstance(err.value, FileNotFoundError)


def test_ensure_weights_unknown_file_names_folders(tmp_path):
    with pytest.raises(MissingWeightsError, match="my_custom.pth") as err:
        dl.ensure_weights("my_custom.pth", "facerestore_models")
    assert str(paths.models_dir("facerestore_models")) in str(err.value)


def test_ensure_weights_no_network(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}/detection_Resnet50_Final.pth"
    monkeypatch.setitem(registry.REGISTRY, "detection_Resnet50_Final.pth", _spec(url, name="detection_Resnet50_Final.pth"))
    with pytest.raises(MissingWeightsError) as err:
        dl.ensure_weights("detection_Resnet50_Final.pth", "facedetection", progress=False)
    msg = str(err.value)
    assert "detection_Resnet50_Final.pth" in msg and url in msg
    assert str(paths.models_dir("facedetection")) in msg


def test_downloads_go_to_the_callers_first_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GPEN_OFFLINE", "1")
    first, second = tmp_path / "comfy_facedetection", tmp_path / "other"
    with pytest.raises(MissingWeightsError) as info:
        dl.ensure_weights("detection_Resnet50_Final.pth", "facedetection", [first, second])
    assert f"place it in the folder:\n  {first}" in str(info.value)
