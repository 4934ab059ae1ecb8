"""Torch versions ComfyUI still supports: no name newer than the minimum torch is used directly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

from gpen import compat

REPO = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter where the names torch 2.4 lacks are removed before gpen is imported:
# torch.OutOfMemoryError (torch 2.5+) and torch.compiler.is_compiling (kept only as dynamo's flag).
OLD_TORCH = r"""
import sys, torch
import torch._dynamo
del torch.OutOfMemoryError
del torch.compiler.is_compiling
torch._dynamo.is_compiling = lambda: False  # old torch's own flag (this torch's forwards to the name removed)
sys.path.insert(0, {repo!r})
import gpen
from gpen.model.layouts import seeded_state_dict
net = gpen.load_model(seeded_state_dict(gpen.GPENConfig(size=64, style_dim=32, n_mlp=2, narrow=0.0625), seed=1))
x = torch.rand(3, 3, 64, 64) * 2 - 1
y = net(x)
calls = []
def flaky(t):
    calls.append(t.shape[0])
    if t.shape[0] > 1:
        raise torch.cuda.OutOfMemoryError("simulated")
    return net(t)
out = gpen.FaceRestorer(flaky, size=64).restore_aligned(torch.rand(3, 64, 64, 3), chunk_size=3)
assert calls == [3, 1, 1, 1], calls
assert not gpen.compat.is_compiling()
print("ok", tuple(y.shape), tuple(out.images.shape))
"""


def test_runs_on_a_torch_without_the_newer_names():
    proc = subprocess.run([sys.executable, "-c", OLD_TORCH.format(repo=str(REPO))], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok (3, 3, 64, 64) (3, 64, 64, 3)"


def test_out_of_memory_errors_of_every_device():
    assert compat.is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert compat.is_oom(RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"))
    assert compat.is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough "
                                      "memory: you tried to allocate 1099511627776 bytes."))
    assert not compat.is_oom(RuntimeError("shape '[2, 3]' is invalid for input of size 7"))
    assert not compat.is_oom(ValueError("out of memory"))  # only the errors torch raises count


def test_minimum_torch_is_stated_where_users_look():
    """README and pyproject name the same minimum torch as the code's compat layer."""
    want = ".".join(map(str, compat.MIN_TORCH))
    readme = (REPO / "README.md").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(rf"torch\s*(>=|≥)\s*{re.escape(want)}\b", readme), want
    assert re.search(rf"torch\s*>=\s*{re.escape(want)}\b", pyproject), want
    assert compat.torch_version() >= compat.MIN_TORCH and compat.check_torch()
