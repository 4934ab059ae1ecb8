"""Stand-ins with known behaviour for the helper networks (no weights needed)."""

from __future__ import annotations

import torch

from gpen.faces.parsing import PARSENET_LABELS


class GridParserNet(torch.nn.Module):
    """A parser stand-in with a known label map: at 512 px, a 4 x 5 grid of 128 x 102 cells; cell k
    (row-major) holds the class named ``PARSENET_LABELS[k]`` (k < 19; the last cell is background),
    written in the calling parser's own label order."""

    def __init__(self, labels):
        super().__init__()
        self.labels = labels
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    @staticmethod
    def cells():
        """(name, row slice, column slice) of every cell, at 512 px."""
        out = []
        for k in range(20):
            r, c = divmod(k, 4)
            name = PARSENET_LABELS[k] if k < 19 else "background"
            out.append((name, slice(r * 102, (r + 1) * 102 if r < 4 else 512), slice(c * 128, (c + 1) * 128)))
        return out

    def forward(self, x):
        n, _, h, w = x.shape
        label = torch.zeros((h, w), dtype=torch.long)
        for name, rows, cols in self.cells():
            label[rows, cols] = self.labels.index(name)
        logits = torch.nn.functional.one_hot(label, 19).permute(2, 0, 1).float()
        return logits.expand(n, -1, -1, -1).clone(), None


def interior(rows: slice, cols: slice, margin: int) -> tuple[slice, slice]:
    """The part of a cell ``margin`` pixels away from its sides."""
    return slice(rows.start + margin, rows.stop - margin), slice(cols.start + margin, cols.stop - margin)
