"""A local HTTP file server (127.0.0.1 only) for download tests: Range requests, cut connections,
error statuses, slow transfers, and a log of every request.

``FileServer.add(path, data, **behaviour)`` publishes bytes under a URL path; ``url(path)`` is its
address. Behaviours (keyword arguments, changeable later through ``routes[path]``):

- ``status``: answer every request with this HTTP status and no body (403, 404, ...);
- ``cut_after``: on each of the first ``cuts`` requests (default: all), send only this many bytes of
  the requested range, then close the connection (the headers announce the full length);
- ``ranges``: honour ``Range: bytes=N-`` with 206 Partial Content (default True; False answers 200
  with the whole file, as servers without range support do);
- ``chunk`` / ``delay``: send in chunks of this size with this pause between them (a slow server).

``requests`` lists ``(path, range header or None)`` for every GET received.
"""

from __future__ import annotations

import http.server
import re
import threading
import time
from dataclasses import dataclass


@dataclass
class Route:
    data: bytes
    status: int = 200
    cut_after: int | None = None
    cuts: int | None = None
    ranges: bool = True
    chunk: int = 1 << 16
    delay: float = 0.0


class FileServer:
    """A threading HTTP server on 127.0.0.1 serving :class:`Route` objects; use as a context manager."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):  # noqa: N802 (http.server API)
                server._serve(self)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, data: bytes = b"", **behaviour) -> str:
        self.routes[path] = Route(data, **behaviour)
        return self.url(path)

    def gets(self, path: str) -> list[str | None]:
        """The Range headers (None: no Range) of every GET of ``path`` so far."""
        with self._lock:
            return [r for p, r in self.requests if p == path]

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _serve(self, h: http.server.BaseHTTPRequestHandler) -> None:
        rng = h.headers.get("Range")
        with self._lock:
            self.requests.append((h.path, rng))
            route = self.routes.get(h.path)
            n_before = sum(1 for p, _ in self.requests[:-1] if p == h.path)
        if route is None or route.status != 200:
            h.send_response(404 if route is None else route.status)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        data, start = route.data, 0
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and route.ranges:
            start = int(match.group(1))
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        body = data[start:]
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes" if route.ranges else "none")
        h.end_headers()
        cut = route.cut_after is not None and (route.cuts is None or n_before < route.cuts)
        if cut:
            body = body[: route.cut_after]
        try:
            for i in range(0, len(body), route.chunk):
                h.wfile.write(body[i : i + route.chunk])
                h.wfile.flush()
                if route.delay:
                    time.sleep(route.delay)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if cut:
            h.close_connection = True
