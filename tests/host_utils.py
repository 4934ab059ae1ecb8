"""Running the real ComfyUI host for tests: locate/install it, start a headless server, talk to it.

The host is ComfyUI 0.8.0 from ``<shared>/comfyui`` (``<repo>/../shared`` or ``$GPEN_SHARED_DIR``),
installed on demand into ``<repo>/.cache/comfyui`` (or used from ``$GPEN_COMFYUI_DIR``, a folder
holding ComfyUI's ``main.py``). Each test session starts its own server on a free local port with
``--cpu --base-directory <tmp>``, where ``<tmp>/custom_nodes/<pack>`` links to this repository.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "ComfyUI-GPEN"


def shared_dir() -> Path:
    """The read-only reference data folder (may not exist)."""
    return Path(os.environ.get("GPEN_SHARED_DIR") or REPO.parent / "shared")


def comfyui_dir() -> Path | None:
    """Folder holding ComfyUI's ``main.py``, installing it when needed; None when impossible."""
    env = os.environ.get("GPEN_COMFYUI_DIR")
    if env:
        return Path(env) if (Path(env) / "main.py").is_file() else None
    dest = REPO / ".cache" / "comfyui"
    main = dest / "ComfyUI" / "main.py"
    if main.is_file():
        return main.parent
    installer = shared_dir() / "comfyui" / "install.sh"
    if not installer.is_file():
        return None
    proc = subprocess.run(["bash", str(installer), str(dest)], env={**os.environ, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0 or not main.is_file():
        raise RuntimeError(f"installing ComfyUI into {dest} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return main.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_base_dir(base: Path, pack: Path = REPO) -> Path:
    """A ComfyUI ``--base-directory`` with this pack linked into ``custom_nodes``."""
    for sub in ("custom_nodes", "models/facerestore_models", "models/facedetection", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIR_NAME
    if not link.exists():
        link.symlink_to(pack, target_is_directory=True)
    return base


class ComfyServer:
    """A headless ComfyUI server process and a small JSON client for it."""

    def __init__(self, comfy_dir: Path, base_dir: Path, port: int | None = None, env: dict | None = None):
        self.comfy_dir = comfy_dir
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
        cmd = [sys.executable, str(self.comfy_dir / "main.py"), "--cpu", "--listen", "127.0.0.1",
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
            if isinstance(kind, list) or kind in ("COMBO", "INT", "FLOAT", "STRING", "BOOLEAN"):
                out.append((name, spec))
    return out


def widget_value_ok(spec, value) -> bool:
    """Whether ``value`` is acceptable for an input spec from ``/object_info``."""
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
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
