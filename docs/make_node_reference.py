"""Regenerate the README's node reference from the live schemas: ``python docs/make_node_reference.py [URL]``.

The tables go between the ``<!-- node-reference:start -->`` and ``<!-- node-reference:end -->``
markers of README.md.

With a URL (e.g. http://127.0.0.1:8188) the running server's ``/object_info`` is read; without
one a headless ComfyUI with this pack is started as the host tests do (see tests/host_utils.py).
tests/test_comfyui_host.py fails when the README and the schemas disagree.
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NODES = ("GPENModelLoader", "GPENFaceRestore")
START, END = "<!-- node-reference:start -->", "<!-- node-reference:end -->"


def _fmt(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _type_of(spec: list) -> str:
    kind, opts = spec[0], spec[1] if len(spec) > 1 else {}
    if kind == "COMBO" or isinstance(kind, list):
        options = opts.get("options", kind if isinstance(kind, list) else [])
        if any(o.endswith(" [download]") for o in options):  # the loader: files on disk + downloadable ones
            return "choice: files in the folder, then released files not on disk yet (`<name> [download]`)"
        return "choice: " + (", ".join(f"`{o}`" for o in options) if options else "files in the folder")
    if kind in ("INT", "FLOAT") and "min" in opts:
        return f"{kind} {_fmt(opts['min'])}..{_fmt(opts['max'])}"
    return kind


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|")


def render(info: dict) -> str:
    """Markdown tables of every input (type, default, optional, tooltip) and output of our nodes."""
    lines = ["Generated from the live `/object_info` of ComfyUI 0.8.0 by `docs/make_node_reference.py`;",
             "the host tests check every input and default below against the running server.", ""]
    for node in NODES:
        spec = info[node]
        lines += [f"### {spec['display_name']} (`{node}`)", "",
                  f"Category: `{spec['category']}`. {spec['description']}", "",
                  "| Input | Type | Default | Optional | Tooltip |", "|---|---|---|---|---|"]
        for group in ("required", "optional"):
            for name in spec["input_order"].get(group, []):
                s = spec["input"][group][name]
                opts = s[1] if len(s) > 1 else {}
                default = f"`{_fmt(opts['default'])}`" if "default" in opts else "—"
                lines.append(f"| `{name}` | {_type_of(s)} | {default} | {'yes' if group == 'optional' else 'no'} "
                             f"| {_cell(opts.get('tooltip'))} |")
        lines += ["", "| Output | Type | Tooltip |", "|---|---|---|"]
        for name, kind, tip in zip(spec["output_name"], spec["output"], spec["output_tooltips"]):
            lines.append(f"| `{name}` | {kind} | {_cell(tip)} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1:
        info = json.load(urllib.request.urlopen(sys.argv[1].rstrip("/") + "/object_info"))
    else:
        sys.path.insert(0, str(REPO / "tests"))
        import host_utils as H

        try:
            host = H.install_host(H.HOST_VERSIONS[0])
        except H.HostUnavailable as exc:
            raise SystemExit(f"ComfyUI not available: {exc}") from None
        with tempfile.TemporaryDirectory(prefix="gpen_nodes_md_") as tmp:
            server = H.ComfyServer(host, H.make_base_dir(Path(tmp))).start()
            try:
                info = server.get("/object_info")
            finally:
                server.stop()
    readme = REPO / "README.md"
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{render(info)}\n{END}{tail}")
    print("updated the node reference in", readme)


if __name__ == "__main__":
    main()
