"""Temporal consistency of restored faces on video: a gated filter along each face track.

GPEN restores every frame on its own, so grain, skin texture and fine detail change from frame to
frame even where the face does not: flicker. This filter works in the aligned crop space of a face
track, where the same face sits at the same place in every frame, and replaces each restored crop
by a weighted mean of the restored crops of its track at most :data:`RADIUS` frames before and
after it, pixel by pixel:

``y_t = sum_s w_ts * x_s / sum_s w_ts``, ``w_tt = 1``, ``w_ts = prod over the steps k -> k+1 between
t and s of (consistency * g_k)``,

the two-sided form of a recursive filter with coefficient ``consistency * g`` run forwards and
backwards (their sum, the frame itself counted once), so it has neither lag nor pre-echo. The
gate ``g_k`` (0..1 per pixel) is 1 where the aligned *input* crops of frames k and k+1 are alike
and 0 where they differ: the inputs are averaged over blocks of ``S / GRID`` pixels (a low-pass,
so sensor noise and a sub-pixel alignment jitter hardly move them), and the mean absolute RGB
change of each block, ``d``, opens the gate fully below ``GATE_OPEN + NOISE_K * noise`` and
shuts it above ``GATE_CLOSED + NOISE_K * noise`` (linear between). ``noise`` is the median over
the blocks of the same measure taken across each block's two halves: a change of light or a slow
drift leaves it near 0, while sensor noise fills it as it fills ``d``, so small, noisy faces
(whose crops are enlarged, their noise spread over many crop pixels) keep the gate open too. A
shut block shuts its neighbours; the map is then smoothed and resized to the crop.
An expression change, a turn, a change of light or a cut therefore stop the blending where they
happen, and only there.

The chain stops where the track has no restored face (a frame where the face is absent, a face
not selected, or one the reference check skipped) and at shot boundaries: it never bridges a
frame that is missing. Faces interpolated into a tracking gap (the detector missed them there)
take part like detected ones: their input pixels exist, and the gate decides from them whether
the face is still the same. ``RADIUS`` is kept small so that video segments need only their
context frames to give the same result as one run (see :mod:`gpen.runs.segments`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

RADIUS = 2  # frames each side; with the landmark smoothing's 2 this fits the segments' 4 context frames
GRID = 32  # the gate's low-pass: the crop averaged to GRID x GRID blocks
# the gate on the blocks' mean absolute RGB change d (0..1 scale), from bench/results/cpu_temporal_consistency.json:
# open below GATE_OPEN + NOISE_K * noise, closed above GATE_CLOSED + NOISE_K * noise
GATE_OPEN = 0.01
GATE_CLOSED = 0.03
NOISE_K = 2.0


def low_pass(crops: torch.Tensor) -> torch.Tensor:
    """Aligned input crops (N, 3, S, S) 0..1 averaged to (N, 3, GRID, 2 GRID) float32: each block's left
    and right halves (their mean is the block's mean; their difference measures the noise)."""
    return F.adaptive_avg_pool2d(crops.float(), (GRID, 2 * GRID))


def block_change(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(d, noise) between two low-passed crops (3, GRID, 2 GRID): d (GRID, GRID) the blocks' mean absolute
    RGB change; noise the median of the same measure taken across each block's halves, which a
    smooth change (light, a slow drift) leaves near 0 and sensor noise fills as it fills d."""
    diff = a - b
    left, right = diff[..., 0::2], diff[..., 1::2]
    d = ((left + right) / 2).abs().mean(dim=0)
    noise = ((left - right) / 2).abs().mean(dim=0).median()
    return d, noise


def gate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The gate (GRID, GRID) 0..1 between two neighbouring frames' low-passed input crops (see
    :func:`low_pass`): 1 where they are alike, 0 where the face changed."""
    d, noise = block_change(a, b)
    lo, hi = GATE_OPEN + NOISE_K * noise, GATE_CLOSED + NOISE_K * noise
    g = ((hi - d) / (hi - lo)).clamp(0, 1)[None, None]
    g = -F.max_pool2d(-g, 3, stride=1, padding=1)  # a changed block shuts its neighbours too,
    return F.avg_pool2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), 3, stride=1)[0, 0]  # then soft edges


def filter_crop(restored: Sequence[torch.Tensor], gates: Sequence[torch.Tensor], centre: int,
                consistency: float) -> torch.Tensor:
    """The filtered crop of ``restored[centre]``: ``restored`` (3, S, S) are one track's restored crops
    of consecutive frames, ``gates[k]`` the gate (:func:`gate`) between frames k and k + 1. The
    weights are made and normalised on the gate's grid and resized to the crop (bilinear, so they
    still sum to 1 at every pixel)."""
    weights = [None] * len(restored)
    weights[centre] = torch.ones_like(gates[0])
    for step in (-1, 1):
        s = centre
        while 0 <= s + step < len(restored):
            weights[s + step] = weights[s] * (consistency * gates[min(s, s + step)])
            s += step
    w = torch.stack(weights)
    w = w / w.sum(0)
    size = restored[centre].shape[-1]
    w = F.interpolate(w[:, None], size=(size, size), mode="bilinear", align_corners=False)  # (K, 1, S, S)
    out = torch.zeros_like(restored[centre], dtype=torch.float32)
    for k, r in enumerate(restored):
        out.addcmul_(w[k], r.float())
    return out.to(restored[centre].dtype)


class TrackFilter:
    """The filter over a stream of restored faces in frame order (the restorer's frame steps).

    :meth:`add` takes each step's faces (anything with ``track`` and ``image_index``; a face
    without a track passes unfiltered), their restored crops, their low-passed input crops
    (:func:`low_pass`, taken before the network may overwrite the input) and what else is to be
    handed back with them (the aligned input crops); :meth:`take` hands back, filtered, the faces
    whose neighbours up to ``RADIUS`` frames later are in. Crops no longer needed are dropped, so
    memory stays bounded on long batches. ``shots``: the batch's shots as frame ranges (start,
    stop) (:func:`gpen.faces.shots.find_shots`); the chain never crosses from one to the next.
    """

    def __init__(self, consistency: float, shots: Sequence[tuple[int, int]] | None = None) -> None:
        self.consistency = float(consistency)
        self._starts = sorted(int(a) for a, _ in shots) if shots is not None else []
        self._restored: dict[tuple[int, int], torch.Tensor] = {}
        self._inputs: dict[tuple[int, int], torch.Tensor] = {}
        self._gates: dict[tuple[int, int], torch.Tensor] = {}  # (track, frame): the gate to frame + 1
        self._pending: list[tuple[object, torch.Tensor, torch.Tensor]] = []

    @staticmethod
    def _key(face) -> tuple[int, int] | None:
        return None if face.track is None else (int(face.track), int(face.image_index))

    def add(self, faces: Sequence, restored: torch.Tensor, low: torch.Tensor, extra: torch.Tensor) -> None:
        """Keep the restored crops (N, 3, S, S) of ``faces``, their low-passed inputs and ``extra`` (N, ...)."""
        for j, face in enumerate(faces):
            key = self._key(face)
            if key is not None:
                self._restored[key] = restored[j]
                self._inputs[key] = low[j]
            self._pending.append((face, extra[j], restored[j]))

    def take(self, before: float, keep: Callable[[object], bool] = lambda f: True
             ) -> tuple[list, torch.Tensor, torch.Tensor] | None:
        """(faces, their ``extra`` stacked, their filtered crops stacked) of the pending faces of
        frames before ``before`` that ``keep`` accepts (None if none); the others are dropped."""
        ready = [p for p in self._pending if p[0].image_index < before]
        self._pending = [p for p in self._pending if p[0].image_index >= before]  # any arrival order
        oldest = min((p[0].image_index for p in self._pending), default=before)
        ready = [p for p in ready if keep(p[0])]
        out = None
        if ready:
            out = ([p[0] for p in ready], torch.stack([p[1] for p in ready]),
                   torch.stack([self.filtered(self._key(f), r) for f, _, r in ready]))
        if oldest != float("inf"):  # what the faces still pending (or yet to come) can reach back to
            for key in [k for k in self._restored if k[1] < oldest - RADIUS]:
                del self._restored[key], self._inputs[key]
                self._gates.pop(key, None)
        return out

    def _linked(self, track: int, frame: int, other: int) -> bool:
        if (track, other) not in self._restored:
            return False
        return bisect_right(self._starts, frame) == bisect_right(self._starts, other)  # the same shot

    def filtered(self, key: tuple[int, int] | None, crop: torch.Tensor) -> torch.Tensor:
        """The filtered crop of the face ``key`` (its own restored crop ``crop`` when it has no track)."""
        if key is None or self.consistency <= 0:
            return crop
        track, frame = key
        lo = frame
        while lo > frame - RADIUS and self._linked(track, lo, lo - 1):
            lo -= 1
        hi = frame
        while hi < frame + RADIUS and self._linked(track, hi, hi + 1):
            hi += 1
        if lo == hi:
            return crop
        gates = []
        for f in range(lo, hi):
            if (track, f) not in self._gates:
                self._gates[(track, f)] = gate(self._inputs[(track, f)], self._inputs[(track, f + 1)])
            gates.append(self._gates[(track, f)])
        return filter_crop([self._restored[(track, f)] for f in range(lo, hi + 1)], gates, frame - lo,
                           self.consistency)
