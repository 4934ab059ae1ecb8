"""Test-only ComfyUI custom node pack: reports what ComfyUI's memory manager holds.

Linked into the test host's ``custom_nodes`` by ``tests/conftest.py`` (never part of the pack).

- node ``GPENTestMemoryProbe`` (input: any IMAGE, so it runs after the node that made it): its
  ui output ``report`` is one JSON string, see :func:`memory_report`;
- ``GET /gpen_test/memory``: the same report, between prompts; with ``?scan=1`` it also lists
  every GPEN network alive in the process (found by the garbage collector), loaded or not.

``$GPEN_TEST_DERIVED_CACHE`` names the module attribute in which GPEN caches weight-derived
tensors (``gpen.model.network.DERIVED_CACHE``, passed by the test), so the report can count them.
"""

from __future__ import annotations

import gc
import json
import os

import psutil
from aiohttp import web
from comfy import model_management
from server import PromptServer


def _derived(module, cache_attr: str) -> int | None:
    return sum(len(m.__dict__.get(cache_attr) or ()) for m in module.modules()) if cache_attr else None


def _workspace(network) -> int | None:
    """Bytes GPEN keeps between CPU calls (``workspace_bytes``); None for other networks."""
    count = getattr(network, "workspace_bytes", None)
    return int(count()) if count is not None else None


def memory_report(scan: bool = False) -> dict:
    """Every model in ``model_management.current_loaded_models`` (its holder class, the class of
    the network inside, device, loaded and total bytes, cached derived tensors) and the RSS."""
    import torch

    cache_attr = os.environ.get("GPEN_TEST_DERIVED_CACHE", "")
    models = []
    for loaded in model_management.current_loaded_models:
        patcher = loaded.model
        if patcher is None:
            continue
        holder = patcher.model
        inner = getattr(holder, "network", None)
        derived = _derived(holder, cache_attr)
        devices = sorted({str(t.device) for t in holder.state_dict().values()})
        models.append({"class": type(holder).__name__, "network": type(inner).__name__ if inner is not None else None,
                       "load_device": str(loaded.device), "weight_devices": devices,
                       "loaded_bytes": int(patcher.loaded_size()), "size_bytes": int(patcher.model_size()),
                       "derived_tensors": derived, "workspace_bytes": _workspace(inner)})
    report = {"models": models, "rss": psutil.Process().memory_info().rss}
    if scan:
        nets = [o for o in gc.get_objects() if isinstance(o, torch.nn.Module) and type(o).__name__ == "GPEN"]
        report["gpen_networks"] = [{"derived_tensors": _derived(n, cache_attr), "workspace_bytes": _workspace(n),
                                    "weight_devices": sorted({str(t.device) for t in n.state_dict().values()})}
                                   for n in nets]
    return report


class GPENTestMemoryProbe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "probe"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def probe(self, image):
        report = json.dumps(memory_report())
        return {"ui": {"report": [report]}, "result": (report,)}


@PromptServer.instance.routes.get("/gpen_test/memory")
async def _memory(request):
    return web.json_response(memory_report(scan=request.query.get("scan") == "1"))


NODE_CLASS_MAPPINGS = {"GPENTestMemoryProbe": GPENTestMemoryProbe}
NODE_DISPLAY_NAME_MAPPINGS = {"GPENTestMemoryProbe": "GPEN test: memory probe"}

