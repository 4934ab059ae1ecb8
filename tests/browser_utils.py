"""Headless Chromium driven through its DevTools protocol, for tests of the real ComfyUI frontend.

No browser automation package is needed: Chromium (Debian package ``chromium``) is started with
``--remote-debugging-port`` and each page is driven over one websocket (aiohttp's client) with the
few protocol calls used here (``Runtime.evaluate``, ``Page.navigate``, ``Page.captureScreenshot``).
A :class:`Page` is synchronous (it owns an event loop), so tests read top to bottom.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

WIDTH, HEIGHT = 1600, 1000


def chromium_executable() -> str | None:
    """Path of a Chromium (or Chrome) binary on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


class JSError(RuntimeError):
    """An exception thrown by JavaScript evaluated in the page."""


class Chromium:
    """A headless Chromium process with a DevTools endpoint on a local port."""

    def __init__(self, exe: str, profile: Path, port: int) -> None:
        self.port = port
        self.log_path = profile.parent / "chromium.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--no-default-browser-check", "--mute-audio", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
             f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
            stdout=self._log, stderr=subprocess.STDOUT)
        self._endpoint("/json/version", timeout=60)

    def _endpoint(self, path: str, method: str = "GET", timeout: float = 10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
                with urllib.request.urlopen(req, timeout=5) as r:
                    body = r.read()
                return json.loads(body) if body.strip().startswith((b"{", b"[")) else body
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chromium DevTools not reachable on port {self.port}:\n"
                                       f"{self.log_path.read_text(errors='replace')[-2000:]}") from None
                time.sleep(0.25)

    def _browser_call(self, method: str, **params):
        """One call on the browser-level DevTools endpoint (a short-lived connection)."""
        import aiohttp

        ws_url = self._endpoint("/json/version")["webSocketDebuggerUrl"]

        async def run():
            async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
                await ws.send_json({"id": 1, "method": method, "params": params})
                while True:
                    msg = await ws.receive_json()
                    if msg.get("id") == 1:
                        if "error" in msg:
                            raise RuntimeError(f"{method}: {msg['error']}")
                        return msg["result"]

        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(run())
        finally:
            loop.close()

    def new_page(self) -> Page:
        """A tab in a new browser context: no storage shared with earlier pages (the frontend
        would otherwise restore the workflow a previous test left open)."""
        context = self._browser_call("Target.createBrowserContext", disposeOnDetach=False)["browserContextId"]
        target = self._browser_call("Target.createTarget", url="about:blank", browserContextId=context)["targetId"]
        return Page(self, target, f"ws://127.0.0.1:{self.port}/devtools/page/{target}", context)

    def close_target(self, target_id: str, context: str | None = None) -> None:
        try:
            self._browser_call("Target.closeTarget", targetId=target_id)
            if context:
                self._browser_call("Target.disposeBrowserContext", browserContextId=context)
        except RuntimeError:
            pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._log.close()


class Page:
    """One browser tab: evaluate JavaScript, wait for conditions, take screenshots."""

    def __init__(self, browser: Chromium, target_id: str, ws_url: str, context: str | None = None) -> None:
        import aiohttp

        self.browser, self.target_id, self.context = browser, target_id, context
        self.loop = asyncio.new_event_loop()
        self._next_id = 0
        self.console: list[str] = []

        async def connect():
            session = aiohttp.ClientSession()
            return session, await session.ws_connect(ws_url, max_msg_size=0)

        self._session, self._ws = self.loop.run_until_complete(connect())
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
                  mobile=False)

    def call(self, method: str, **params):
        """One DevTools protocol call; returns its result (events seen meanwhile are kept)."""
        async def run():
            self._next_id += 1
            await self._ws.send_json({"id": self._next_id, "method": method, "params": params})
            while True:
                msg = await self._ws.receive_json()
                if msg.get("id") == self._next_id:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg["result"]
                if msg.get("method") == "Runtime.consoleAPICalled":
                    args = msg["params"].get("args", [])
                    self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
                elif msg.get("method") == "Runtime.exceptionThrown":
                    self.console.append("exception: " + json.dumps(msg["params"]["exceptionDetails"])[:500])

        return self.loop.run_until_complete(run())

    def js(self, expression: str):
        """Evaluate ``expression`` (promises are awaited) and return its JSON value."""
        r = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            details = r["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise JSError(f"{text}\n--- in ---\n{expression[:1500]}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, what: str | None = None):
        """Poll ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what or expression[:300]} not true within {timeout}s")
            time.sleep(0.25)

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def screenshot(self, path: Path, fmt: str = "png", clip: dict | None = None, quality: int = 85) -> Path:
        """Save the viewport (or ``clip``: x, y, width, height in CSS pixels) as PNG or JPEG."""
        params = {"format": fmt}
        if fmt == "jpeg":
            params["quality"] = quality
        if clip:
            params["clip"] = {**clip, "scale": clip.get("scale", 1)}
        r = self.call("Page.captureScreenshot", **params)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(r["data"]))
        return path

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self._ws.close())
            self.loop.run_until_complete(self._session.close())
        finally:
            self.loop.close()
            self.browser.close_target(self.target_id, self.context)
