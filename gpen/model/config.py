"""The hyper-parameters of a GPEN network and the released models' width table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GPENConfig:
    """Hyper-parameters of one GPEN network, as inferred from its weights.

    ``channels`` maps every resolution (4 .. size) to its feature width; ``channel_multiplier``
    and ``narrow`` are the names the released models use for the same table.
    """

    size: int
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: float = 2
    narrow: float = 1.0
    channels: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.size < 8 or self.size & (self.size - 1):
            raise ValueError(f"GPEN size must be a power of two >= 8, got {self.size}")
        if not self.channels:
            object.__setattr__(self, "channels", default_channels(self.size, self.channel_multiplier, self.narrow))

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))


def default_channels(size: int, channel_multiplier: float, narrow: float) -> dict[int, int]:
    """The released models' width table: 512 up to 32 px, then shrinking with resolution."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
            256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier,
            2048: 8 * channel_multiplier, 4096: 4 * channel_multiplier}
    return {r: int(base[r] * narrow) for r in base if r <= size}
