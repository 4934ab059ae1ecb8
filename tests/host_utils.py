"""Running real ComfyUI hosts for tests: install them, start a headless server, talk to it.

Hosts are the ComfyUI versions in :data:`HOST_VERSIONS`, unpacked from ``<shared>/comfyui``
(``<repo>/../shared`` or ``$GPEN_SHARED_DIR``) by its ``install.sh``. Their requirements conflict
(frontend and template packages, comfy-aimdo, av...), so each version gets its own virtual
environment in ``<repo>/.cache/comfyui-<version>/venv``. That environment does not reinstall torch:
a ``.pth`` file appends the test interpreter's site-packages to the END of its ``sys.path``, so
torch, torchvision and the pack's own requirements come from the test's environment while the
host's own packages, installed into the version's environment, come first. The first use of a
version installs it (about a minute, needs the package registry); later runs reuse it.

``$GPEN_COMFYUI_VERSIONS`` (comma-separated) narrows the versions tested. With
``$GPEN_REQUIRE_HOST=1`` (set by ``.ci/run``) a host that cannot be installed fails the tests that
need it instead of skipping them.

Each test session starts its own servers on free local ports with ``--cpu --base-directory <tmp>``,
where ``<tmp>/custom_nodes/<pack>`` links to this repository.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import site
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "ComfyUI-GPEN"
HOST_VERSIONS = ("0.8.0", "0.33.0")
"""ComfyUI versions the pack is tested in: the one of January 2026 and the newest available."""
ENV_VERSIONS = "GPEN_COMFYUI_VERSIONS"
ENV_REQUIRE = "GPEN_REQUIRE_HOST"
INSTALL_TIMEOUT_S = 1800


class HostUnavailable(RuntimeError):
    """A ComfyUI host cannot be installed or started here (the message says why)."""


def shared_dir() -> Path:
    """The read-only reference data folder (may not exist)."""
    return Path(os.environ.get("GPEN_SHARED_DIR") or REPO.parent / "shared")


def host_required() -> bool:
    """True where a missing host (or browser, or comfy-cli) is a failure, not a skip: under
    ``$GPEN_REQUIRE_HOST=1`` (``.ci/run``) or a CI system's ``$CI``."""
    return os.environ.get(ENV_REQUIRE, "") == "1" or bool(os.environ.get("CI"))


def host_versions() -> list[str]:
    """The versions to test: all of :data:`HOST_VERSIONS`, or those named in ``$GPEN_COMFYUI_VERSIONS``."""
    wanted = [v.strip() for v in os.environ.get(ENV_VERSIONS, "").split(",") if v.strip()]
    unknown = sorted(set(wanted) - set(HOST_VERSIONS))
    if unknown:
        raise ValueError(f"${ENV_VERSIONS}: unknown ComfyUI version(s) {unknown}; known: {HOST_VERSIONS}")
    return wanted or list(HOST_VERSIONS)


@dataclass(frozen=True)
class Host:
    """An installed ComfyUI version: its source folder and the python that runs it."""

    version: str
    root: Path
    comfy_dir: Path
    python: Path

    def __str__(self) -> str:
        return f"ComfyUI {self.version}"

    def folds_advanced_inputs(self) -> bool:
        """Whether this host's ``comfy_api`` inputs take ``advanced`` (read from its own source):
        its frontend then folds those widgets away until the user shows them."""
        source = (self.comfy_dir / "comfy_api" / "latest" / "_io.py").read_text()
        return bool(re.search(r"^class Input\(_IO_V3\):.*?def __init__\([^)]*\badvanced\b", source, flags=re.S | re.M))


def _test_site_packages() -> list[str]:
    """The site-packages folders of the interpreter running the tests (torch lives there)."""
    paths = [*site.getsitepackages(), site.getusersitepackages() if site.ENABLE_USER_SITE else ""]
    return list(dict.fromkeys(str(Path(p).resolve()) for p in paths if p and Path(p).is_dir()))


def _fingerprint(version: str, tarball: Path, installer: Path) -> str:
    """What an installed host depends on: version, archive, installer and the test interpreter."""
    h = hashlib.sha256()
    for part in (version, str(tarball.stat().st_size), installer.read_bytes().decode(), sys.version,
                 *_test_site_packages()):
        h.update(part.encode())
    return h.hexdigest()


@contextlib.contextmanager
def _install_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def install_host(version: str) -> Host:
    """The host ``version``, installed into ``<repo>/.cache/comfyui-<version>`` when needed.

    Raises :class:`HostUnavailable` when the shared archive is absent or the installation fails.
    """
    root = REPO / ".cache" / f"comfyui-{version}"
    comfy_dir, venv = root / "ComfyUI", root / "venv"
    python = venv / "bin" / "python"
    installer = shared_dir() / "comfyui" / "install.sh"
    tarball = shared_dir() / "comfyui" / f"ComfyUI-{version}.tar.gz"
    if not installer.is_file() or not tarball.is_file():
        raise HostUnavailable(f"ComfyUI {version} cannot be installed: {tarball} or {installer} not found "
                              f"(the shared reference folder; set $GPEN_SHARED_DIR)")
    marker = root / ".installed"
    fingerprint = _fingerprint(version, tarball, installer)
    with _install_lock(REPO / ".cache" / f"comfyui-{version}.lock"):
        if marker.is_file() and marker.read_text() == fingerprint and python.is_file():
            return Host(version, root, comfy_dir, python)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        log = root / "install.log"
        _run([sys.executable, "-m", "venv", str(venv)], log, f"creating the environment of ComfyUI {version}")
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        # Plain paths in a .pth file are appended to sys.path after the environment's own
        # site-packages: the host's packages shadow, everything else comes from the test python.
        (Path(purelib) / "zz_gpen_test_python.pth").write_text("\n".join(_test_site_packages()) + "\n")
        _run(["bash", str(installer), str(root), version], log, f"installing ComfyUI {version}",
             env={**os.environ, "PYTHON": str(python)})
        if (Path(purelib) / "torch").exists():
            raise HostUnavailable(f"installing ComfyUI {version} pulled a second torch into {purelib}; "
                                  f"the host must use the test interpreter's torch (see {log})")
        _run([str(python), "-c", "import torch, aiohttp, yaml"], log, f"checking ComfyUI {version}'s environment")
        marker.write_text(fingerprint)
    return Host(version, root, comfy_dir, python)


COMFY_CLI = "comfy-cli==1.23.0"
"""The Comfy Registry's command line (``comfy node validate`` / ``pack``), in its own environment."""


def install_comfy_cli() -> Path:
    """The ``comfy`` executable of :data:`COMFY_CLI`, installed into ``<repo>/.cache/comfy-cli``
    when needed (its dependencies stay out of the test environment). Raises :class:`HostUnavailable`."""
    root = REPO / ".cache" / "comfy-cli"
    exe, marker = root / "venv" / "bin" / "comfy", root / ".installed"
    with _install_lock(REPO / ".cache" / "comfy-cli.lock"):
        if marker.is_file() and marker.read_text() == COMFY_CLI and exe.is_file():
            return exe
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        log = root / "install.log"
        _run([sys.executable, "-m", "venv", str(root / "venv")], log, "creating the comfy-cli environment")
        _run([str(root / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", COMFY_CLI], log,
             f"installing {COMFY_CLI}")
        marker.write_text(COMFY_CLI)
    return exe


def _run(cmd: list[str], log: Path, what: str, env: dict | None = None) -> None:
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        try:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise HostUnavailable(f"{what} took over {INSTALL_TIMEOUT_S}s (log: {log})") from None
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise HostUnavailable(f"{what} failed (exit {proc.returncode}; log: {log}):\n{tail}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_base_dir(base: Path, pack: Path = REPO, extra_nodes: dict[str, Path] | None = None) -> Path:
    """A ComfyUI ``--base-directory`` with this pack (and ``extra_nodes``: folder name -> pack)
    linked into ``custom_nodes``."""
    for sub in ("custom_nodes", "models/facerestore_models", "models/facedetection", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for name, target in {PACK_DIR_NAME: pack, **(extra_nodes or {})}.items():
        link = base / "custom_nodes" / name
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    return base


class ComfyServer:
    """A headless ComfyUI server process and a small JSON client for it."""

    def __init__(self, host: Host, base_dir: Path, port: int | None = None, env: dict | None = None):
        self.host = host
        self.comfy_dir = host.comfy_dir
        self.base_dir = base_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base_dir / "server.log"
        self.client_id = uuid.uuid4().hex
        self._env = {**os.environ, **(env or {})}
        self._proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 120.0) -> "ComfyServer":
        """Start the server and wait until ``/system_stats`` answers."""
        cmd = [str(self.host.python), str(self.comfy_dir / "main.py"), "--cpu", "--listen", "127.0.0.1",
               "--port", str(self.port), "--disable-auto-launch", "--base-directory", str(self.base_dir),
               "--database-url", "sqlite:///:memory:", "--disable-api-nodes"]
        self._log = open(self.log_path, "w")
        self._proc = subprocess.Popen(cmd, cwd=self.base_dir, stdout=self._log, stderr=subprocess.STDOUT,
                                      env=self._env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self._proc.returncode}:\n{self.log()[-3000:]}")
            try:
                self.get("/system_stats", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout}s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        """Stop the server process (terminate, then kill) and close its log."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=15)
        if self._log is not None:
            self._log.close()
            self._log = None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def post(self, path: str, payload: dict, timeout: float = 30):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def queue(self, prompt: dict) -> str:
        """Queue an API-format prompt; returns its id (raises with the server's answer if rejected)."""
        status, answer = self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})
        if status != 200 or "prompt_id" not in answer:
            raise AssertionError(f"prompt rejected ({status}): {json.dumps(answer, indent=1)[:3000]}")
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 180.0) -> dict:
        """The history entry of a finished prompt (success or error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            entry = hist.get(prompt_id) if hist else None
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"].get("status_str") in ("success", "error")):
                return entry
            if not self.alive():
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log()[-3000:]}")
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout}s:\n{self.log()[-3000:]}")

    def run(self, prompt: dict, timeout: float = 180.0) -> dict:
        return self.wait(self.queue(prompt), timeout)


def interrupt_after_progress(server: ComfyServer, prompt: dict, node_id: str, timeout: float = 180.0) -> list[dict]:
    """Queue ``prompt``, press Cancel (``POST /interrupt``) once ``node_id`` reports its first
    progress step, and return the websocket messages seen until the prompt stopped.

    Driven by the server's own progress messages, not by sleeping, so it does not race.
    """
    import asyncio

    import aiohttp  # a ComfyUI requirement, present wherever the host runs

    async def main() -> list[dict]:
        seen = []
        ws_url = server.url.replace("http", "ws", 1) + f"/ws?clientId={server.client_id}"
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
            prompt_id = server.queue(prompt)
            interrupted = False
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = await ws.receive(timeout=deadline - time.monotonic())
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                seen.append(data)
                body = data.get("data", {})
                if body.get("prompt_id") not in (None, prompt_id):
                    continue
                if not interrupted and data["type"] == "progress" and body.get("node") == node_id:
                    async with session.post(server.url + "/interrupt", json={}) as r:
                        assert r.status == 200
                    interrupted = True
                if data["type"] in ("execution_interrupted", "execution_error", "execution_success"):
                    return seen
                if data["type"] == "executing" and body.get("node") is None and body.get("prompt_id") == prompt_id:
                    return seen
        raise TimeoutError(f"prompt did not stop within {timeout}s")

    return asyncio.run(main())


def status_messages(entry: dict, event: str) -> list[dict]:
    """The ``event`` messages (e.g. ``execution_error``) recorded in a history entry."""
    return [data for name, data in entry.get("status", {}).get("messages", []) if name == event]


def output_files(entry: dict, node_id: str, key: str = "images") -> list[dict]:
    return entry.get("outputs", {}).get(node_id, {}).get(key, [])


def view_query(file: dict) -> str:
    return "/view?" + urllib.parse.urlencode({"filename": file["filename"], "subfolder": file.get("subfolder", ""),
                                             "type": file.get("type", "output")})


def widget_inputs(node_info: dict) -> list[tuple[str, object]]:
    """(name, spec) of a node's inputs that the frontend shows as widgets, in widgets_values order.

    Socket-only types (IMAGE, MASK, custom types such as GPEN_MODEL) are links, not widgets;
    combo inputs (a list of options or "COMBO") and INT/FLOAT/STRING/BOOLEAN are widgets.
    """
    out = []
    for group in ("required", "optional"):
        inputs = node_info["input"].get(group, {})
        for name in node_info["input_order"].get(group, []):
            spec = inputs[name]
            kind = spec[0]
            if isinstance(kind, list) or kind in ("COMBO", "INT", "FLOAT", "STRING", "BOOLEAN", "COMFY_DYNAMICCOMBO_V3"):
                out.append((name, spec))
    return out


def widget_value_ok(spec, value) -> bool:
    """Whether ``value`` is acceptable for an input spec from ``/object_info``."""
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    if kind == "COMFY_DYNAMICCOMBO_V3":  # 0.33.0: a combo whose options carry nested inputs
        return value in [o["key"] for o in opts.get("options", [])]
    if isinstance(kind, list) or kind == "COMBO":
        options = kind if isinstance(kind, list) else opts.get("options", [])
        return value in options
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if kind == "INT" and not float(value).is_integer():
            return False
        return opts.get("min", -float("inf")) <= value <= opts.get("max", float("inf"))
    if kind == "STRING":
        return isinstance(value, str)
    return False


# ---- what the test hosts hold ------------------------------------------------------------------

PROBE_NODES = REPO / "tests" / "host_nodes" / "gpen_test_probe"
REACTOR_STAND_IN = REPO / "tests" / "host_nodes" / "reactor_stand_in"
LANDMARKS_STAND_IN = REPO / "tests" / "host_nodes" / "landmarks_stand_in"
TEST_NODE_PACKS = {"gpen_test_probe": PROBE_NODES, "comfyui-reactor": REACTOR_STAND_IN,
                   "landmarks_stand_in": LANDMARKS_STAND_IN}
"""Test-only node packs linked into every test host beside this pack, by the folder name they get
in ``custom_nodes`` (the stand-in takes the real pack's registry name, as the frontend shows it)."""
CHECKPOINT = "GPEN-BFR-256-seeded.pth"
"""A checkpoint in the full GPEN-BFR-256 layout with seeded random weights (no real weights here)."""
FACE_CROP = "gpen_host_input.png"
"""256 x 256 crop around the astronaut's face (``skimage.data.astronaut``), an aligned-mode input."""
CLIP = "input.mp4"
"""A short generated clip of that face crop moving a few pixels per frame (the video template's file)."""
CLIP_FRAMES = 8
SEEDED_DETECTION_FILES = ("detection_mobilenet0.25_Final.pth", "parsing_parsenet.pth")
"""facexlib networks with seeded random weights: they run (through ComfyUI's memory manager) but
find meaningless faces. ``detection_Resnet50_Final.pth`` stays absent on purpose (error tests)."""


def template_images() -> list[str]:
    """Image files the example workflows' LoadImage nodes name, so that they load without missing media."""
    names = set()
    for path in (REPO / "example_workflows").glob("*.json"):
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] == "LoadImage" and node.get("widgets_values"):
                names.add(node["widgets_values"][0])
    return sorted(names)


def prepare_base(base: Path) -> Path:
    """Fill a base directory (see :func:`make_base_dir`) with the seeded models and inputs above."""
    import cv2
    import numpy as np
    import torch
    from PIL import Image
    from skimage.data import astronaut

    from gpen.faces.detect import build_retinaface
    from gpen.model.layouts import seeded_state_dict
    from gpen.faces.parsing import build_parsing_net

    models = base / "models"
    torch.save(seeded_state_dict("GPEN-BFR-256", seed=1234), models / "facerestore_models" / CHECKPOINT)
    with torch.random.fork_rng():  # the networks' own random initialisation, seeded
        torch.manual_seed(0)
        for name, net in zip(SEEDED_DETECTION_FILES, (build_retinaface("mobile0.25"), build_parsing_net("parsenet"))):
            torch.save(net.state_dict(), models / "facedetection" / name)
    photo = Image.fromarray(astronaut())
    crop = photo.crop((96, 0, 352, 256))
    crop.save(base / "input" / FACE_CROP)
    for name in template_images():
        photo.save(base / "input" / name)
    writer = cv2.VideoWriter(str(base / "input" / CLIP), cv2.VideoWriter_fourcc(*"mp4v"), 8.0, (256, 256))
    big = np.asarray(photo)[:, :, ::-1]  # BGR for OpenCV
    for i in range(CLIP_FRAMES):
        writer.write(np.ascontiguousarray(big[2 * i:256 + 2 * i, 96 + 3 * i:352 + 3 * i]))
    writer.release()
    # The frontend's first-run tour and template browser would cover the graph in the browser tests.
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False,
                                    "Comfy.Graph.CanvasInfo": False}))
    return base


def main(argv: list[str]) -> int:
    """``python tests/host_utils.py install``: install every host version and comfy-cli at once
    (in parallel: mostly downloads and unpacking), as the tests would on first use."""
    from concurrent.futures import ThreadPoolExecutor

    if argv != ["install"]:
        print("usage: python tests/host_utils.py install", file=sys.stderr)
        return 2
    jobs = {f"ComfyUI {v}": (install_host, v) for v in host_versions()}
    jobs[COMFY_CLI] = (install_comfy_cli,)
    failed = 0
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {name: pool.submit(*job) for name, job in jobs.items()}
        for name, future in futures.items():
            try:
                print(f"{name}: {future.result()}")
            except HostUnavailable as exc:
                print(f"{name}: {exc}", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # prepare_base's gpen imports, when run as a script
    raise SystemExit(main(sys.argv[1:]))
