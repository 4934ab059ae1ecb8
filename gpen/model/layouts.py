"""The tensor layouts of the released GPEN-BFR checkpoints, and seeded weights in those layouts.

``gpen/data/layout_GPEN-BFR-<N>.json`` lists every tensor name and shape of the four released
files (measured from the real files). They serve to check downloads and to build seeded
checkpoints for tests and benchmarks where real weights are not available.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from .network import GPEN, GPENConfig

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
RELEASED_MODELS = ("GPEN-BFR-256", "GPEN-BFR-512", "GPEN-BFR-1024", "GPEN-BFR-2048")


@lru_cache(maxsize=None)
def released_layout(name: str) -> dict:
    """Layout of a released checkpoint: ``{"config": GPENConfig, "shapes": {key: shape}}``."""
    name = name.removesuffix(".pth")
    if name not in RELEASED_MODELS:
        raise KeyError(f"unknown GPEN model {name!r}; known: {', '.join(RELEASED_MODELS)}")
    raw = json.loads((DATA_DIR / f"layout_{name}.json").read_text())
    config = GPENConfig(size=raw["size"], style_dim=raw["style_dim"], n_mlp=raw["n_mlp"],
                        channel_multiplier=raw["channel_multiplier"], narrow=raw["narrow"])
    return {"config": config, "shapes": {k: tuple(s) for k, s in raw["keys"]}}


def seeded_state_dict(config: GPENConfig | str, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A reproducible random GPEN state dict (for tests and benchmarks; it restores nothing).

    Weights follow the architecture's own initialisation; parameters that start at zero in a
    fresh model (biases, feature-injection strengths) get small non-zero values so that every
    tensor influences the output. ``config`` is a ``GPENConfig`` or a released model name.
    """
    if isinstance(config, str):
        config = released_layout(config)["config"]
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, t in GPEN(config).state_dict().items():
        if key.endswith("kernel"):
            state[key] = t.clone()
        elif key.endswith("noise.weight"):
            state[key] = 0.1 + 0.4 * torch.rand(t.shape, generator=gen)
        elif key.endswith("bias"):
            base = 1.0 if key.endswith("modulation.bias") else 0.0
            state[key] = base + 0.1 * torch.randn(t.shape, generator=gen)
        elif ".style." in key:  # mapping network: equalised lr with lr_mul 0.01 stores weights x100
            state[key] = torch.randn(t.shape, generator=gen) * 100.0
        else:
            state[key] = torch.randn(t.shape, generator=gen)
    return {k: v.to(dtype) for k, v in state.items()}
