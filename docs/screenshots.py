"""Regenerate the README screenshots: the real ComfyUI frontend in headless Chromium.

    python docs/screenshots.py            (needs ComfyUI, see tests/host_utils.py, and chromium)

Starts a headless ComfyUI with this pack (as the host tests do), opens the frontend in Chromium
through its DevTools protocol, loads workflows with ``app.loadGraphData`` and saves:

- ``docs/screenshot_workflow.png``: the single-image example workflow as a user sees it.
- ``docs/screenshot_compare.png``: the restore node after a run, with its before/after view.
  No real GPEN weights exist on the build machine: that run uses a *seeded random* GPEN-BFR-256
  checkpoint, so the "after" side shows what random weights produce, not restoration quality.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import host_utils as H  # noqa: E402

WIDTH, HEIGHT = 1600, 1000
CHECKPOINT = "GPEN-BFR-256-seeded-random.pth"


class DevTools:
    """The few Chrome DevTools protocol calls we need, over aiohttp's websocket client."""

    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params):
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def js(self, expression: str):
        r = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"JS error: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.js(expression):
                return
            await asyncio.sleep(0.25)
        raise TimeoutError(expression)

    async def screenshot(self, path: Path) -> None:
        r = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(r["data"]))
        print("saved", path)


def start_chromium(profile: Path, port: int) -> subprocess.Popen:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        raise SystemExit("chromium not found (apt-get install -y chromium)")
    return subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync", "--no-first-run",
                             f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
                             f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def page_websocket(port: int, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2))
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError("chromium DevTools did not come up")


def compare_workflow() -> dict:
    """A small graph for the compare screenshot: aligned face crop through the seeded model."""
    workflow = json.loads((REPO / "example_workflows" / "gpen_restore_single_image.json").read_text())
    for node in workflow["nodes"]:
        if node["type"] == "LoadImage":
            node["widgets_values"][0] = "face_crop.png"
        elif node["type"] == "GPENModelLoader":
            node["widgets_values"][0] = CHECKPOINT
        elif node["type"] == "GPENFaceRestore":
            node["widgets_values"][0] = "aligned"
    return workflow


async def drive(server_url: str, ws_url: str, out_dir: Path) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        dt = DevTools(ws)
        await dt.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
                      mobile=False)
        await dt.call("Page.navigate", url=server_url)
        await dt.wait_for("!!(window.app && window.app.graph && window.app.canvas)", timeout=120)
        await asyncio.sleep(2)

        single = (REPO / "example_workflows" / "gpen_restore_single_image.json").read_text()
        await dt.js(f"app.loadGraphData({single}).then(() => true)")
        await asyncio.sleep(2)
        await dt.js("(() => { const ds = app.canvas.ds; ds.scale = 0.92; ds.offset = [80, 40];"
                    " app.canvas.setDirty(true, true); return true; })()")
        await asyncio.sleep(1.5)
        await dt.screenshot(out_dir / "screenshot_workflow.png")

        await dt.js(f"app.loadGraphData({json.dumps(compare_workflow())}).then(() => true)")
        await asyncio.sleep(1.5)
        await dt.js("app.queuePrompt(0, 1).then(() => true)")
        await dt.wait_for("(() => { const n = app.graph.nodes.find(n => n.type === 'GPENFaceRestore');"
                          " return !!(n && n.gpenCompare && n.gpenCompare.root.querySelector('img').complete"
                          " && n.gpenCompare.root.querySelector('img').naturalWidth > 0); })()", timeout=180)
        await asyncio.sleep(2)
        await dt.js("(() => { const ds = app.canvas.ds; ds.scale = 0.92; ds.offset = [80, 40];"
                    " app.canvas.setDirty(true, true); return true; })()")
        await asyncio.sleep(1.5)
        await dt.screenshot(out_dir / "screenshot_compare.png")


def main() -> None:
    import torch
    from PIL import Image
    from skimage.data import astronaut

    from gpen.model.layouts import seeded_state_dict

    comfy = H.comfyui_dir()
    if comfy is None:
        raise SystemExit("ComfyUI not available (see tests/host_utils.py)")
    with tempfile.TemporaryDirectory(prefix="gpen_screens_") as tmp:
        tmp = Path(tmp)
        base = H.make_base_dir(tmp / "base")
        torch.save(seeded_state_dict("GPEN-BFR-256", seed=1234), base / "models" / "facerestore_models" / CHECKPOINT)
        Image.fromarray(astronaut()).save(base / "input" / "example.png")
        Image.fromarray(astronaut()).crop((96, 0, 352, 256)).save(base / "input" / "face_crop.png")
        settings = base / "user" / "default" / "comfy.settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}))
        server = H.ComfyServer(comfy, base, env={"GPEN_OFFLINE": "1"}).start()
        port = H.free_port()
        browser = start_chromium(tmp / "profile", port)
        try:
            asyncio.run(drive(server.url, page_websocket(port), REPO / "docs"))
        finally:
            browser.terminate()
            browser.wait(timeout=15)
            server.stop()


if __name__ == "__main__":
    os.environ.setdefault("GPEN_OFFLINE", "1")
    main()
