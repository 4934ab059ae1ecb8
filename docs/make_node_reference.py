"""Regenerate the node reference of docs/nodes.md from the live schemas: ``python docs/make_node_reference.py [URL ...]``.

The tables go between the ``<!-- node-reference:start -->`` and ``<!-- node-reference:end -->``
markers of docs/nodes.md. They are the oldest supported host's schema; inputs only newer hosts offer
(``face_landmarks``: ComfyUI 0.33.0's core MediaPipe nodes) follow, marked with the version.

With URLs (e.g. http://127.0.0.1:8188, one server per ComfyUI version) the running servers'
``/object_info`` is read; without them a headless ComfyUI with this pack is started for every
version of ``tests/host_utils.HOST_VERSIONS``, as the host tests do (see tests/host_utils.py).
tests/test_comfyui_host.py fails when docs/nodes.md and the schemas disagree.
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


def _shown(infos: dict[str, dict], node: str, name: str) -> str:
    """``advanced`` where a host marks the input so (its frontend folds it away until the user shows
    advanced inputs; the newest host that has the input decides), else ``yes``."""
    for version in reversed(list(infos)):
        spec = infos[version][node]["input"]
        for group in ("required", "optional"):
            if name in spec.get(group, {}):
                s = spec[group][name]
                return "advanced" if len(s) > 1 and s[1].get("advanced") else "yes"
    return "yes"


def render(infos: dict[str, dict]) -> str:
    """Markdown tables of every input (type, default, optional, tooltip) and output of our nodes, from
    ``infos`` (ComfyUI version -> its ``/object_info``, oldest first)."""
    versions = list(infos)
    info = infos[versions[0]]
    lines = [f"Generated from the live `/object_info` of ComfyUI {' and '.join(versions)} by "
             "`docs/make_node_reference.py`;",
             "the host tests check every input and default below against the running servers.",
             f"Shown: `advanced` inputs are folded away in ComfyUI {versions[-1]}'s Nodes 2.0 view until the user "
             "clicks \"Show advanced inputs\";",
             "where a host has no advanced inputs, every input is shown.", ""]
    for node in NODES:
        spec = info[node]
        lines += [f"### {spec['display_name']} (`{node}`)", "",
                  f"Category: `{spec['category']}`. {spec['description']}", "",
                  "| Input | Type | Default | Optional | Shown | Tooltip |", "|---|---|---|---|---|---|"]
        for group in ("required", "optional"):
            for name in spec["input_order"].get(group, []):
                s = spec["input"][group][name]
                opts = s[1] if len(s) > 1 else {}
                default = f"`{_fmt(opts['default'])}`" if "default" in opts else "—"
                lines.append(f"| `{name}` | {_type_of(s)} | {default} | {'yes' if group == 'optional' else 'no'} "
                             f"| {_shown(infos, node, name)} | {_cell(opts.get('tooltip'))} |")
        seen = {n for g in ("required", "optional") for n in spec["input_order"].get(g, [])}
        for version in versions[1:]:  # inputs only newer hosts offer
            newer = infos[version][node]
            for group in ("required", "optional"):
                for name in newer["input_order"].get(group, []):
                    if name in seen:
                        continue
                    seen.add(name)
                    s = newer["input"][group][name]
                    opts = s[1] if len(s) > 1 else {}
                    default = f"`{_fmt(opts['default'])}`" if "default" in opts else "—"
                    lines.append(f"| `{name}` | {_type_of(s)} | {default} | {'yes' if group == 'optional' else 'no'} "
                                 f"(ComfyUI {version}+ only) | {_shown(infos, node, name)} "
                                 f"| {_cell(opts.get('tooltip'))} |")
        lines += ["", "| Output | Type | Tooltip |", "|---|---|---|"]
        for name, kind, tip in zip(spec["output_name"], spec["output"], spec["output_tooltips"]):
            lines.append(f"| `{name}` | {kind} | {_cell(tip)} |")
        lines.append("")
    return "\n".join(lines)


def _read(url: str) -> tuple[str, dict]:
    """(ComfyUI version, ``/object_info``) of a running server."""
    base = url.rstrip("/")
    version = json.load(urllib.request.urlopen(base + "/system_stats"))["system"]["comfyui_version"]
    return version, json.load(urllib.request.urlopen(base + "/object_info"))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def main() -> None:
    infos = {}
    if len(sys.argv) > 1:
        infos = dict(_read(url) for url in sys.argv[1:])
    else:
        sys.path.insert(0, str(REPO / "tests"))
        import host_utils as H

        for version in H.HOST_VERSIONS:
            try:
                host = H.install_host(version)
            except H.HostUnavailable as exc:
                raise SystemExit(f"ComfyUI {version} not available: {exc}") from None
            with tempfile.TemporaryDirectory(prefix="gpen_nodes_md_") as tmp:
                server = H.ComfyServer(host, H.make_base_dir(Path(tmp))).start()
                try:
                    infos[version] = server.get("/object_info")
                finally:
                    server.stop()
    infos = dict(sorted(infos.items(), key=lambda kv: _version_key(kv[0])))
    page = REPO / "docs" / "nodes.md"
    text = page.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    page.write_text(f"{head}{START}\n{render(infos)}\n{END}{tail}")
    print("updated the node reference in", page)


if __name__ == "__main__":
    main()
