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


class ScriptedDetector:
    """A detector backend stand-in (for :class:`gpen.faces.detect.FaceDetector`) that reports, frame
    by frame, the faces a script lists: ``faces[t]`` = a list of (landmarks (5, 2), score) for the
    t-th frame it is shown (wrapping round for every further batch). Boxes are drawn around the
    landmarks in the proportions of a RetinaFace box (from half an eye distance beside the eyes to
    half below the mouth); faces below the detection threshold are not reported, as by a detector."""

    def __init__(self, faces):
        self.faces = faces
        self.seen = 0

    def __call__(self, images, threshold):
        import numpy as np

        from gpen.faces.detect import Detections

        out = []
        for _ in range(images.shape[0]):
            listed = [(np.asarray(lm, np.float32), float(s)) for lm, s in self.faces[self.seen % len(self.faces)]
                      if s >= threshold]
            self.seen += 1
            if not listed:
                out.append(Detections.empty())
                continue
            lms = np.stack([lm for lm, _ in listed])
            eye = np.linalg.norm(lms[:, 1] - lms[:, 0], axis=-1)[:, None]
            lo, hi = lms.min(axis=1), lms.max(axis=1)
            boxes = np.concatenate([lo - eye * [0.6, 1.0], hi + eye * [0.6, 0.5]], axis=1).astype(np.float32)
            out.append(Detections.from_arrays(boxes, np.asarray([s for _, s in listed], np.float32), lms))
        return out
