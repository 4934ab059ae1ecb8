"""Model folder lookup (gpen.weights.paths), the registry, and the verified, resumable downloader
(gpen.weights.download).

Downloads are exercised against a local HTTP server on 127.0.0.1 (tests/http_server.py); nothing
here touches the internet.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gpen.weights import download as dl
from gpen.weights import registry
from gpen.weights import paths
from gpen.errors import GPENError, InvalidInputError, MissingWeightsError

from http_server import FileServer

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, not all one value
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
CUT = 300_000  # bytes a cut connection delivers


@pytest.fixture()
def server():
    with FileServer() as srv:
        srv.add("/good.pth", PAYLOAD)
        yield srv


@pytest.fixture(autouse=True)
def _isolated_models(tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv(paths.ENV_MODELS_DIR, str(tmp_path / "models"))
    monkeypatch.delenv(dl.ENV_OFFLINE, raising=False)
    monkeypatch.delenv(dl.ENV_MIRROR, raising=False)
    monkeypatch.setattr(dl, "LOCK_DIR", tmp_path_factory.mktemp("locks"))


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _spec(*urls, sha256=None, size=None, name="test_weights.pth", unhashed=()):
    return registry.WeightsFile(name, "facedetection", tuple(urls), sha256=sha256, size=size, unhashed=tuple(unhashed))


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
    (pack / "pyproject.toml").write_text("")  # a clone
    assert paths.models_dir("facerestore_models") == pack / "models" / "facerestore_models"


def test_a_pip_installed_gpen_keeps_models_in_the_user_cache(tmp_path, monkeypatch):
    site = tmp_path / "venv" / "lib" / "site-packages"  # PACK_ROOT of an installed gpen: no clone around it
    site.mkdir(parents=True)
    monkeypatch.delenv(paths.ENV_MODELS_DIR)
    monkeypatch.setattr(paths, "PACK_ROOT", site)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert paths.models_dir("facedetection") == tmp_path / "cache" / "gpen" / "models" / "facedetection"


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


def test_registry_holds_the_gpen_files_of_every_source():
    names = set(registry.REGISTRY)
    assert {f"GPEN-BFR-{n}.pth" for n in (256, 512, 1024, 2048)} <= names
    assert {f"GPEN-BFR-{n}.onnx" for n in (512, 1024, 2048)} <= names  # ReActor's
    assert {f"gpen_bfr_{n}.onnx" for n in (256, 512, 1024, 2048)} <= names  # FaceFusion's
    facexlib = {"detection_Resnet50_Final.pth", "detection_mobilenet0.25_Final.pth", "parsing_parsenet.pth",
                "parsing_bisenet.pth"}
    assert facexlib <= names
    for name in facexlib:
        f = registry.REGISTRY[name]
        assert f.kind == "facedetection" and f.model is None
        assert f.urls[0].startswith("https://github.com/xinntao/facexlib/releases/download/")
        assert f.urls[0].endswith("/" + name)
    assert [f.name for f in registry.gpen_files(onnx=False)] == [f"GPEN-BFR-{n}.pth" for n in (256, 512, 1024, 2048)]
    assert len(registry.gpen_files(onnx=True)) == 7


def test_registry_entries_are_consistent():
    for f in registry.REGISTRY.values():
        assert f.urls and len(set(f.urls)) == len(f.urls), f.name
        assert all(u.startswith("https://") for u in f.urls), f.name
        assert set(f.unhashed) <= set(f.urls)
        assert (f.sha256 is None) == (f.size is None), f"{f.name}: a hash comes with its size from the same pointer"
        assert f.sha256 is None or (len(f.sha256) == 64 and int(f.sha256, 16) >= 0)
        if f.model is not None:
            assert f.kind == "facerestore_models" and f.model in f.name.replace("gpen_bfr_", "GPEN-BFR-")
        if f.is_onnx:  # exports are only ever checked by their hash
            assert f.sha256 is not None and not f.unhashed
        if f.sha256 is not None and f.model is not None:
            assert f.hashed(f.urls[0]) and "huggingface.co" in f.urls[0]  # hashed mirrors come first
    for n in (256, 512, 1024, 2048):
        pth = registry.REGISTRY[f"GPEN-BFR-{n}.pth"]
        assert pth.urls[-1] == f"https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/GPEN-BFR-{n}.pth"
        assert not pth.hashed(pth.urls[-1])  # nobody recorded the OSS files' bytes
        for u in pth.urls:
            if "modelscope" in u:
                assert not pth.hashed(u)  # ModelScope's .pt: another file, checked by layout
    ms = [u for u in registry.REGISTRY["GPEN-BFR-2048.pth"].urls if "modelscope" in u]
    assert ms and all("cv_gpen_image-portrait-enhancement-hires" in u and u.endswith("FilePath=pytorch_model-2048.pt")
                      for u in ms)


def test_unknown_name_is_rejected():
    with pytest.raises(InvalidInputError, match="not a known"):
        dl.download("nonexistent.pth")


# ---------------------------------------------------------------- download


def test_successful_download(server, tmp_path):
    spec = _spec(server.url("/good.pth"), sha256=PAYLOAD_SHA, size=len(PAYLOAD))
    seen = []
    out = dl.download(spec, tmp_path / "dest", progress=False, validate=lambda p: seen.append(p.name))
    assert out == tmp_path / "dest" / "test_weights.pth"
    assert out.read_bytes() == PAYLOAD
    # the hook sees the file under its temporary name, before it is moved into place
    assert len(seen) == 1 and seen[0].startswith("test_weights.pth.") and seen[0].endswith(".part")
    assert _leftovers(tmp_path / "dest") == ["test_weights.pth"]


def test_default_destination_is_kind_folder(server):
    out = dl.download(_spec(server.url("/good.pth")), progress=False)
    assert out == paths.models_dir("facedetection") / "test_weights.pth"
    assert out.read_bytes() == PAYLOAD


def test_connection_cut_mid_file_resumes_with_a_range_request(server, tmp_path):
    url = server.add("/cut-once.pth", PAYLOAD, cut_after=CUT, cuts=1)
    done = []
    out = dl.download(_spec(url, sha256=PAYLOAD_SHA, size=len(PAYLOAD)), tmp_path, progress=False,
                      progress_callback=lambda d, t: done.append((d, t)))
    assert out.read_bytes() == PAYLOAD
    assert server.gets("/cut-once.pth") == [None, f"bytes={CUT}-"]
    assert done[-1] == (len(PAYLOAD), len(PAYLOAD)) and [d for d, _ in done] == sorted(d for d, _ in done)
    assert _leftovers(tmp_path) == ["test_weights.pth"]


def test_interrupted_download_continues_from_its_part_on_the_next_run(server, tmp_path):
    cut = 100_000
    url = server.add("/flaky.pth", PAYLOAD, cut_after=cut)  # every response is cut short
    spec = _spec(url, sha256=PAYLOAD_SHA, size=len(PAYLOAD))
    part = dl.part_path(tmp_path / spec.name, url)
    with pytest.raises(MissingWeightsError, match="kept the partial file") as err:
        dl.download(spec, tmp_path, progress=False)
    assert "incomplete transfer" in str(err.value)
    kept = cut * (dl.MAX_RESUMES + 1)
    assert kept < len(PAYLOAD)
    assert part.stat().st_size == kept and not (tmp_path / spec.name).exists()
    assert len(server.gets("/flaky.pth")) == dl.MAX_RESUMES + 1
    server.routes["/flaky.pth"].cut_after = None  # the network is back
    out = dl.download(spec, tmp_path, progress=False)
    assert out.read_bytes() == PAYLOAD
    assert server.gets("/flaky.pth")[-1] == f"bytes={kept}-"
    assert _leftovers(tmp_path) == ["test_weights.pth"]


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    url = server.add("/norange.pth", PAYLOAD, cut_after=CUT, cuts=1, ranges=False)
    out = dl.download(_spec(url, sha256=PAYLOAD_SHA, size=len(PAYLOAD)), tmp_path, progress=False)
    assert out.read_bytes() == PAYLOAD  # the 200 answer to the Range request was written from the start
    assert server.gets("/norange.pth") == [None, f"bytes={CUT}-"]


def test_stale_part_that_fails_the_hash_is_downloaded_again_from_the_start(server, tmp_path):
    spec = _spec(server.url("/good.pth"), sha256=PAYLOAD_SHA, size=len(PAYLOAD))
    part = dl.part_path(tmp_path / spec.name, spec.urls[0])
    part.write_bytes(b"\xff" * CUT)  # left by an older version of the file
    out = dl.download(spec, tmp_path, progress=False)
    assert out.read_bytes() == PAYLOAD
    assert server.gets("/good.pth") == [f"bytes={CUT}-", None]
    assert _leftovers(tmp_path) == ["test_weights.pth"]


def test_falls_back_to_the_next_url_on_404_403_and_no_connection(server, tmp_path):
    forbidden = server.add("/forbidden.pth", status=403)
    refused = f"http://127.0.0.1:{_closed_port()}/x.pth"
    spec = _spec(server.url("/missing.pth"), forbidden, refused, server.url("/good.pth"), sha256=PAYLOAD_SHA)
    out = dl.download(spec, tmp_path, progress=False)
    assert out.read_bytes() == PAYLOAD
    assert [p for p, _ in server.requests] == ["/missing.pth", "/forbidden.pth", "/good.pth"]
    assert _leftovers(tmp_path) == ["test_weights.pth"]


def test_every_url_failing_names_file_urls_reasons_and_folder(server, tmp_path):
    forbidden = server.add("/forbidden.pth", status=403)
    spec = _spec(server.url("/missing.pth"), forbidden)
    with pytest.raises(MissingWeightsError) as err:
        dl.download(spec, tmp_path / "dest", progress=False)
    msg = str(err.value)
    assert "test_weights.pth" in msg and str(tmp_path / "dest") in msg
    assert f"{server.url('/missing.pth')}: HTTP 404" in msg and f"{forbidden}: HTTP 403" in msg
    assert _leftovers(tmp_path / "dest") == []


def test_checksum_mismatch_deletes_the_download_and_says_so(server, tmp_path):
    spec = _spec(server.url("/good.pth"), sha256="0" * 64, size=len(PAYLOAD))
    with pytest.raises(MissingWeightsError, match="sha256 mismatch") as err:
        dl.download(spec, tmp_path, progress=False)
    assert PAYLOAD_SHA in str(err.value) and "deleted the downloaded file" in str(err.value)
    assert _leftovers(tmp_path) == []  # nothing that looks complete, no partial file either


def test_announced_size_mismatch_is_rejected_before_transfer(server, tmp_path):
    spec = _spec(server.url("/good.pth"), size=len(PAYLOAD) + 1)
    with pytest.raises(MissingWeightsError, match="announces"):
        dl.download(spec, tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


def test_unhashed_url_is_checked_by_the_hook_only(server, tmp_path):
    other = server.add("/other-serialisation.pth", PAYLOAD[::-1])
    spec = _spec(server.url("/missing.pth"), other, sha256=PAYLOAD_SHA, size=len(PAYLOAD), unhashed=[other])
    seen = []
    out = dl.download(spec, tmp_path, progress=False, validate=lambda p: seen.append(p.stat().st_size))
    assert out.read_bytes() == PAYLOAD[::-1] and seen == [len(PAYLOAD)]


@pytest.mark.parametrize("hook_result", ["raise", False])
def test_validate_hook_failure(server, tmp_path, hook_result):
    def validate(path):
        if hook_result == "raise":
            raise GPENError("not a GPEN checkpoint: missing generator.style.1.weight")
        return False

    with pytest.raises(MissingWeightsError, match="failed validation") as err:
        dl.download(_spec(server.url("/good.pth")), tmp_path, progress=False, validate=validate)
    if hook_result == "raise":
        assert "generator.style.1.weight" in str(err.value)
    assert _leftovers(tmp_path) == []


def test_existing_file_is_replaced_only_by_a_verified_one(server, tmp_path):
    (tmp_path / "test_weights.pth").write_bytes(b"old")
    with pytest.raises(MissingWeightsError):
        dl.download(_spec(server.url("/good.pth"), sha256="1" * 64), tmp_path, progress=False)
    assert (tmp_path / "test_weights.pth").read_bytes() == b"old"
    out = dl.download(_spec(server.url("/good.pth"), sha256=PAYLOAD_SHA), tmp_path, progress=False)
    assert out.read_bytes() == PAYLOAD


def test_existing_verified_file_is_not_downloaded_again(server, tmp_path):
    (tmp_path / "test_weights.pth").write_bytes(PAYLOAD)
    out = dl.download(_spec(server.url("/good.pth"), sha256=PAYLOAD_SHA, size=len(PAYLOAD)), tmp_path, progress=False)
    assert out == tmp_path / "test_weights.pth" and server.requests == []


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
        dl.download(_spec(server.url("/good.pth")), tmp_path, progress=False)
    assert _leftovers(tmp_path) == [] and server.requests == []


def test_mirror_is_tried_first_for_known_files(server, tmp_path, monkeypatch):
    spec = _spec(server.url("/good.pth"), sha256=PAYLOAD_SHA)
    monkeypatch.setitem(registry.REGISTRY, spec.name, spec)
    server.add("/mirror/test_weights.pth", PAYLOAD)
    monkeypatch.setenv(dl.ENV_MIRROR, server.url("/mirror/"))
    assert dl.candidate_urls(spec)[0] == server.url("/mirror/test_weights.pth")
    assert dl.download(spec.name, tmp_path, progress=False).read_bytes() == PAYLOAD
    assert [p for p, _ in server.requests] == ["/mirror/test_weights.pth"]
    monkeypatch.setenv(dl.ENV_MIRROR, server.url("/empty-mirror"))  # a mirror without the file: fall back
    assert dl.download(spec.name, tmp_path / "b", progress=False).read_bytes() == PAYLOAD
    assert [p for p, _ in server.requests][1:] == ["/empty-mirror/test_weights.pth", "/good.pth"]
    assert dl.candidate_urls(_spec(server.url("/good.pth"), name="not_registered.pth")) == [server.url("/good.pth")]


def test_progress_reporter_serves_downloads_without_a_callback(server, tmp_path):
    calls = []
    previous = dl.set_progress_reporter(lambda spec: (lambda d, t: calls.append((spec.name, d, t))))
    try:
        dl.ensure_weights(_spec(server.url("/good.pth")), "facedetection", [tmp_path], progress=False)
        assert calls[-1] == ("test_weights.pth", len(PAYLOAD), len(PAYLOAD))
        own = []
        dl.download(_spec(server.url("/good.pth"), name="b.pth"), tmp_path, progress=False,
                    progress_callback=lambda d, t: own.append(d))
        assert own[-1] == len(PAYLOAD) and calls[-1][0] == "test_weights.pth"  # an explicit callback wins
    finally:
        dl.set_progress_reporter(previous)


# ---------------------------------------------------------------- concurrent downloads


def test_two_threads_downloading_one_file_share_one_transfer(server, tmp_path):
    url = server.add("/slow.pth", PAYLOAD, chunk=1 << 16, delay=0.05)  # ~0.8 s
    spec = _spec(url, sha256=PAYLOAD_SHA, size=len(PAYLOAD))
    start = threading.Barrier(2)
    results, errors = [], []

    def worker():
        start.wait()
        try:
            results.append(dl.download(spec, tmp_path, progress=False))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and results == [tmp_path / spec.name] * 2
    assert (tmp_path / spec.name).read_bytes() == PAYLOAD
    assert len(server.gets("/slow.pth")) == 1  # the second found the file after waiting for the lock
    assert _leftovers(tmp_path) == ["test_weights.pth"]


_PROCESS = """
import logging, sys
from pathlib import Path
from gpen.weights import download as dl, registry
logging.basicConfig(level=logging.INFO, format="%(message)s")
dl.LOCK_DIR = Path(sys.argv[4])
spec = registry.WeightsFile("shared.pth", "facedetection", (sys.argv[1],), sha256=sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
print(dl.download(spec, sys.argv[3], progress=False), flush=True)
"""


def test_two_processes_downloading_one_file_share_one_transfer(server, tmp_path):
    url = server.add("/slow-shared.pth", PAYLOAD, chunk=1 << 16, delay=0.12)  # ~2 s
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _PROCESS, url, PAYLOAD_SHA, str(tmp_path / "dest"),
                               str(dl.LOCK_DIR)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO, env=env) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:  # both start downloading at the same moment
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill() if p.poll() is None else None
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [str(tmp_path / "dest" / "shared.pth")] * 2
    assert (tmp_path / "dest" / "shared.pth").read_bytes() == PAYLOAD
    assert len(server.gets("/slow-shared.pth")) == 1
    assert any("waiting for another process" in err for _, err in outputs)  # one waited for the other
    assert _leftovers(tmp_path / "dest") == ["shared.pth"]


def test_failing_delete_does_not_hide_the_real_error(server, tmp_path, monkeypatch, caplog):
    real_unlink = pathlib.Path.unlink

    def unlink(self, missing_ok=False):
        if self.name.endswith(".part"):
            raise PermissionError(13, "The process cannot access the file because it is being used", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(pathlib.Path, "unlink", unlink)
    with caplog.at_level(logging.WARNING, logger="gpen"):
        with pytest.raises(MissingWeightsError, match="sha256 mismatch"):
            dl.download(_spec(server.url("/good.pth"), sha256="0" * 64), tmp_path, progress=False)
    assert "could not delete" in caplog.text
    assert not (tmp_path / "test_weights.pth").exists()


# ---------------------------------------------------------------- ensure_weights


def test_ensure_weights_prefers_existing_file(tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "parsing_parsenet.pth").write_bytes(b"x")
    monkeypatch.setattr(dl, "download", lambda *a, **k: pytest.fail("must not download"))
    assert dl.ensure_weights("parsing_parsenet.pth", "facedetection", [extra]) == extra / "parsing_parsenet.pth"


def test_ensure_weights_downloads_into_kind_folder(server):
    spec = _spec(server.url("/good.pth"), sha256=PAYLOAD_SHA)
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
    assert f"put the file in {first};" in str(info.value).splitlines()[0]


# ---- ModelScope's file list as the source of a file's sha256 (issue 29) ---------------------------

MS_FILE = "/api/v1/models/iic/cv_gpen_test/repo?Revision=master&FilePath=pytorch_model.pt"
MS_LIST = "/api/v1/models/iic/cv_gpen_test/repo/files?Revision=master&Recursive=true"


def _manifest(sha256: str, size: int) -> bytes:
    """ModelScope's answer to the file list request: ``Data.Files[]`` with ``Path``, ``Sha256``, ``Size``."""
    import json

    files = [{"Name": "configuration.json", "Path": "configuration.json", "Type": "blob", "Size": 2,
              "Sha256": "0" * 64, "Revision": "abc"},
             {"Name": "pytorch_model.pt", "Path": "pytorch_model.pt", "Type": "blob", "Size": size,
              "Sha256": sha256, "Revision": "abc"}]
    return json.dumps({"Code": 200, "Data": {"Files": files}, "Success": True}).encode()


@pytest.mark.parametrize("listed", ["good", "bad"])
def test_modelscope_downloads_are_checked_against_its_file_list(server, tmp_path, listed):
    data = os.urandom(300_000)
    sha = hashlib.sha256(data).hexdigest() if listed == "good" else hashlib.sha256(b"other").hexdigest()
    url = server.add(MS_FILE, data)
    server.add(MS_LIST, _manifest(sha, len(data)))
    spec = _spec(url, unhashed=(url,))  # no published hash: the layout check alone before
    if listed == "good":
        path = dl.download(spec, tmp_path, progress=False)
        assert path.read_bytes() == data
    else:
        with pytest.raises(MissingWeightsError, match="the source's manifest says"):
            dl.download(spec, tmp_path, progress=False)
        assert not list(tmp_path.iterdir())  # nothing kept, no partial file either
    assert server.gets(MS_LIST) == [None]  # the list was read once, at download time


def test_list_marks_modelscope_sources_as_manifest_checked(capsys):
    from gpen.runs.cli import main

    assert main(["download", "--list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("GPEN-BFR-1024.pth"))
    ms = [u for u in registry.REGISTRY["GPEN-BFR-1024.pth"].urls if "modelscope.cn" in u]
    assert ms and all(f"{u} (sha256 from the source's manifest)" in line for u in ms)


def test_an_unreadable_file_list_is_said_only_for_a_file_that_came(server, tmp_path, caplog):
    """The file list down and the file there: one warning, the layout check. The whole source down:
    only the download's own error, no word about its file list."""
    data = os.urandom(50_000)
    url = server.add(MS_FILE, data)  # no MS_LIST served: the list request fails
    with caplog.at_level("WARNING", logger="gpen.weights.download"):
        path = dl.download(_spec(url, unhashed=(url,)), tmp_path / "up", progress=False)
    assert path.read_bytes() == data
    assert [r.getMessage() for r in caplog.records if "file list" in r.getMessage()] != []
    caplog.clear()
    down = url.replace(MS_FILE, "/api/v1/models/iic/cv_gpen_gone/repo?Revision=master&FilePath=pytorch_model.pt")
    with caplog.at_level("WARNING", logger="gpen.weights.download"), pytest.raises(MissingWeightsError):
        dl.download(_spec(down, unhashed=(down,)), tmp_path / "down", progress=False)
    assert [r.getMessage() for r in caplog.records if "file list" in r.getMessage()] == []
