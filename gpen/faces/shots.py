"""Shots: where a batch of frames cuts from one scene to another, found from the frames themselves.

A ComfyUI batch is sometimes the frames of one clip, often not (a sampler's four pictures, a
folder loaded as a batch, a clip with cuts). Face tracks, gap filling, false-detection dropping
and landmark smoothing only make sense inside one shot, so the restorer splits every batch here
first (:func:`find_shots`); a batch of unrelated pictures becomes one-frame shots.

Each frame is reduced to a thumbnail (area average, :data:`THUMB` pixels square). Two
neighbouring frames are compared twice: by their colour histograms (:data:`BINS` bins per
channel; half the L1 distance, 0..1), which a zoom or noise hardly changes, and by the
correlation of their grey thumbnails' detail (``(1 - r) / 2``, 0..1, the best over shifts of up
to a third of the frame), which neither a pan nor a change of brightness or contrast changes.
Real motion keeps at least one of the two low; a cut changes both, so the cut score is the
smaller of the two, and frames of different sizes always cut (score 1).

:data:`CUT_THRESHOLD` comes from ``python -m bench shots`` (``bench/results/cpu_shot_cuts.json``):
clips made from the shared Solvay photo and ``skimage.data`` pictures with pans, zooms, brightness
ramps, noise and a face moving across them, against cuts between those pictures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["CUT_THRESHOLD", "cut_parts", "cut_scores", "find_shots"]

THUMB = 32  # thumbnail side for the structural comparison (the histograms use 2 x THUMB)
MAX_SHIFT = 11  # thumbnail pixels (a third of the frame) the structural comparison follows a pan
_DETAIL = 5  # the thumbnails' detail: minus their 5 x 5 box blur (smooth pictures match at any shift)
_FLAT = 1e-3  # a thumbnail whose grey values spread less than this has no structure
BINS = 16  # histogram bins per colour channel
CUT_THRESHOLD = 0.18  # see the module docstring and bench/results/cpu_shot_cuts.json

Frames = torch.Tensor | Sequence[torch.Tensor]


def _rgb(frame: torch.Tensor) -> torch.Tensor:
    """(H, W, C) 0..1 -> (1, 3, H, W) float32 RGB (grey repeated, alpha left out), channels-last in
    memory (the layout the frame has: pooling it so is 1.5x faster than from a strided view)."""
    x = frame[..., :3] if frame.shape[-1] >= 3 else frame[..., :1].expand(*frame.shape[:-1], 3)
    return x[None].permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)


def _signatures(frames: Frames) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Per frame: colour histograms (B, 3, BINS), grey thumbnails (B, THUMB*THUMB) and sizes."""
    hists, greys, sizes = [], [], []
    for f in frames:  # one frame at a time: bounded memory for long batches of large frames
        sizes.append((int(f.shape[0]), int(f.shape[1])))
        x = _rgb(f)
        big = torch.nn.functional.adaptive_avg_pool2d(x, 2 * THUMB)[0].clamp(0, 1).cpu()
        small = torch.nn.functional.adaptive_avg_pool2d(x, THUMB)[0].cpu()
        idx = (big * BINS).long().clamp_(0, BINS - 1).reshape(3, -1)
        hist = torch.zeros(3, BINS).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float32))
        hists.append(hist / idx.shape[1])
        greys.append((small[0] * 0.299 + small[1] * 0.587 + small[2] * 0.114).reshape(-1).double())
    return torch.stack(hists) if hists else torch.zeros(0, 3, BINS), \
        torch.stack(greys) if greys else torch.zeros(0, THUMB * THUMB), sizes


def _pearson(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair the correlation of ``a`` and ``b`` (N, ...) and whether either is flat (no structure)."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    flat_a = na < _FLAT * a.shape[1] ** 0.5
    flat_b = nb < _FLAT * b.shape[1] ** 0.5
    r = (a * b).sum(-1) / (na * nb).clamp_min(1e-12)
    r = torch.where(flat_a | flat_b, torch.where(flat_a & flat_b, 1.0, 0.0), r)
    return r, flat_a | flat_b


def _shifted_distance(greys: torch.Tensor) -> torch.Tensor:
    """(B-1,) ``(1 - r) / 2`` between each grey thumbnail (B, T, T) and the next, ``r`` the best
    correlation of their detail over shifts of up to :data:`MAX_SHIFT` pixels (a pan moves the
    picture, it does not change it)."""
    blur = torch.nn.functional.avg_pool2d(greys[:, None], _DETAIL, 1, _DETAIL // 2, count_include_pad=False)[:, 0]
    detail = greys - blur
    a, b = detail[:-1], detail[1:]
    t = greys.shape[-1]
    best = torch.full((a.shape[0],), -1.0, dtype=greys.dtype)
    for dy in range(-MAX_SHIFT, MAX_SHIFT + 1):
        ya, yb = (slice(0, t - dy), slice(dy, t)) if dy >= 0 else (slice(-dy, t), slice(0, t + dy))
        for dx in range(-MAX_SHIFT, MAX_SHIFT + 1):
            xa, xb = (slice(0, t - dx), slice(dx, t)) if dx >= 0 else (slice(-dx, t), slice(0, t + dx))
            r, flat = _pearson(a[:, ya, xa], b[:, yb, xb])
            best = torch.maximum(best, torch.where(flat, -1.0, r))  # a flat window proves nothing
    r, flat = _pearson(a, b)  # whole frames: two flat ones (e.g. black) are alike, one flat one is not
    best = torch.where(flat, r, best)
    return ((1 - best) / 2).clamp(0, 1)


def cut_parts(frames: Frames) -> tuple[np.ndarray, np.ndarray]:
    """Between each frame and the next: (histogram distance, structural distance), both (B-1,) 0..1.

    Frames of different sizes get 1 for both. A flat grey thumbnail has no structure to compare:
    its structural distance is 0.5 (no correlation), or 0 between two flat frames.
    """
    hists, greys, sizes = _signatures(frames)
    if len(sizes) < 2:
        return np.zeros(0), np.zeros(0)
    hist = 0.5 * (hists[1:] - hists[:-1]).abs().sum(-1).mean(-1)
    struct = _shifted_distance(greys.reshape(-1, THUMB, THUMB))
    resized = torch.tensor([a != b for a, b in zip(sizes[1:], sizes[:-1])])
    hist = torch.where(resized, 1.0, hist.double())
    struct = torch.where(resized, 1.0, struct)
    return hist.numpy(), struct.numpy()


def cut_scores(frames: Frames) -> np.ndarray:
    """How much each frame differs from the next as a cut (B-1,) 0..1: the smaller of the histogram
    and structural distances (:func:`cut_parts`); 1 where the frame size changes."""
    hist, struct = cut_parts(frames)
    return np.minimum(hist, struct)


def find_shots(frames: Frames, threshold: float = CUT_THRESHOLD) -> list[tuple[int, int]]:
    """The shots of a batch as frame ranges ``[(start, stop), ...]`` covering it in order.

    ``frames``: a tensor (B, H, W, C) 0..1 or a list of (H, W, C) tensors (sizes may differ);
    a new shot starts where :func:`cut_scores` exceeds ``threshold``. An empty batch has none.
    """
    n = len(frames)
    if n == 0:
        return []
    cuts = np.flatnonzero(cut_scores(frames) > threshold) + 1 if n > 1 else np.zeros(0, dtype=np.int64)
    edges = [0] + [int(c) for c in cuts] + [n]
    return list(zip(edges[:-1], edges[1:]))

