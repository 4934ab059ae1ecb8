"""Flicker and lag of ``temporal_consistency`` on clips made from real pictures.

    python -m bench temporal --json bench/results/cpu_temporal_consistency.json

No real GPEN weights exist on these machines, and seeded random weights restore nothing, so the
flicker is measured with :class:`TextureRestorer`, a stand-in that behaves like a restorer towards
noise: it smooths the crop (denoise) and adds fine texture made from the crop's own high
frequencies through a fixed random filter, so fresh sensor noise in every frame gives fresh
detail in every restored frame, which is what makes GPEN flicker. The same clips also go through
the released GPEN-BFR-256 layout with seeded weights (the real network and pipeline; its output
is no face).

Clips (from ``skimage.data.astronaut()`` and the Solvay 1927 photograph, with their MTCNN
landmarks from ``tests/fixtures/geometry/landmarks.json``):

- **still**: the picture in every frame with fresh Gaussian sensor noise (sigma 0.02 and 0.04);
  flicker = the mean absolute frame-to-frame change inside the face masks (blend mask > 0.5 in
  both frames), against frame-by-frame restoration (``temporal_consistency=0``).
- **moving**: the astronaut moving 2 px a frame right and 1 px down, with noise: the same flicker.
- **light**, **expression**, **cut**: a still, noisy clip that changes at frame ``CHANGE``: the
  light dims by 20%, the mouth opens (the mouth region moves 6 px down), or the frame cuts to
  another face (a Solvay face warped onto the astronaut's landmarks, so the track goes on and only
  the gate can stop the blending). At frames ``CHANGE - 2 .. CHANGE + 1``: how far the output is
  from the frame-by-frame result, as a share of the change itself (the mean absolute change of the
  frame-by-frame result from ``CHANGE - 1`` to ``CHANGE``, inside the mask); and the *leak*: the
  same distance once what the filter does to the clip without the change is taken out, so that
  only the change carried across time (lag before, pre-echo after) is left.
- Every run also checks that pixels outside the face masks are bit-identical to the input.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import REPO

FRAMES = 12
CHANGE = 6
NOISES = (0.02, 0.04)
STRENGTHS = (0.5, 1.0)


def add_parser(sub) -> None:
    p = sub.add_parser("temporal", help="flicker and lag of temporal_consistency on clips of real pictures")
    p.add_argument("--frames", type=int, default=FRAMES)
    p.add_argument("--no-gpen", action="store_true", help="skip the seeded GPEN-BFR-256 runs")
    p.add_argument("--json")


class TextureRestorer:
    """A restorer stand-in towards noise (crops (N, 3, S, S) in -1..1): a 5 x 5 box smooth (denoise)
    plus ``gain`` times the crop's own high frequencies through a fixed random 5 x 5 filter mixing
    the channels (new detail from each frame's own noise). Deterministic for a given crop, batch
    independent, no state."""

    def __init__(self, size: int = 256, gain: float = 2.0, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.size = size
        self.gain = gain
        self.kernel = torch.randn(3, 3, 5, 5, generator=g) / np.sqrt(75.0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        pad = (2, 2, 2, 2)
        base = F.avg_pool2d(F.pad(x, pad, mode="replicate"), 5, stride=1)
        texture = F.conv2d(F.pad(x - base, pad, mode="replicate"), self.kernel.to(x.device, x.dtype))
        return (base + self.gain * texture).clamp(-1, 1)


def pictures() -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """(picture (1, H, W, 3) 0..1, landmarks (K, 5, 2)) of the astronaut and a part of the Solvay photo."""
    import cv2
    from skimage import data

    marks = json.loads((REPO / "tests" / "fixtures" / "geometry" / "landmarks.json").read_text())["images"]

    def lms(name):
        return np.asarray([f["landmarks5"] for f in marks[name]["faces"]], np.float32)

    solvay = cv2.imread(str(REPO / "assets" / "solvay_conference_1927.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    s_lm = lms("solvay_conference_1927.png")
    keep = (s_lm[:, :, 0].max(1) < 440) & (s_lm[:, :, 1].max(1) < 290) & (s_lm[:, :, 0].min(1) > 20)
    part = np.ascontiguousarray(solvay[:300, :460])
    return {"astronaut": (torch.from_numpy(data.astronaut().astype(np.float32) / 255)[None], lms("skimage.data.astronaut")),
            "solvay": (torch.from_numpy(part.astype(np.float32) / 255)[None], s_lm[keep])}


def noisy(frames: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    """``frames`` with fresh Gaussian noise per frame and pixel, clamped to 0..1."""
    g = torch.Generator().manual_seed(seed)
    return (frames + sigma * torch.randn(frames.shape, generator=g)).clamp(0, 1)


def still_clip(picture: torch.Tensor, landmarks: np.ndarray, frames: int, sigma: float, seed: int = 1):
    """The picture in every frame with fresh noise: (frames (T, H, W, 3), landmarks per frame)."""
    return noisy(picture.expand(frames, -1, -1, -1), sigma, seed), [landmarks.copy() for _ in range(frames)]


def moving_clip(picture: torch.Tensor, landmarks: np.ndarray, frames: int, sigma: float, step=(2, 1), seed: int = 1):
    """The picture moving ``step`` (x, y) pixels a frame (edge pixels repeated), with fresh noise."""
    out, lms = [], []
    pad = frames * max(step)
    big = F.pad(picture.permute(0, 3, 1, 2), (pad, pad, pad, pad), mode="replicate").permute(0, 2, 3, 1)[0]
    h, w = picture.shape[1:3]
    for t in range(frames):
        dx, dy = t * step[0], t * step[1]
        out.append(big[pad - dy:pad - dy + h, pad - dx:pad - dx + w])
        lms.append(landmarks + np.array([dx, dy], np.float32))
    return noisy(torch.stack(out), sigma, seed), lms


def changed_picture(kind: str, picture: torch.Tensor, landmarks: np.ndarray) -> torch.Tensor:
    """The astronaut after a sudden change: "light" (20% darker), "expression" (the mouth region
    moved 6 px down) or "cut" (a Solvay face warped onto the same landmarks, the whole frame)."""
    if kind == "light":
        return picture * 0.8
    if kind == "expression":
        lm = landmarks[0]
        x0, x1 = int(lm[3, 0]) - 8, int(lm[4, 0]) + 8
        y0, y1 = int(min(lm[3, 1], lm[4, 1])) - 10, int(max(lm[3, 1], lm[4, 1])) + 12
        out = picture.clone()
        out[0, y0 + 6:y1 + 6, x0:x1] = picture[0, y0:y1, x0:x1]
        return out
    if kind == "cut":
        import cv2

        from gpen.faces.align import estimate_similarity

        solvay, s_lm = pictures()["solvay"]
        m = estimate_similarity(s_lm[:1].astype(np.float64), landmarks[0].astype(np.float64))[0]
        h, w = picture.shape[1:3]
        warped = cv2.warpAffine(solvay[0].numpy(), m.astype(np.float64), (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)
        return torch.from_numpy(warped)[None]
    raise ValueError(kind)


def step_clip(kind: str | None, picture: torch.Tensor, landmarks: np.ndarray, frames: int, sigma: float):
    """A still, noisy clip whose picture changes (``kind``) from frame ``CHANGE`` on; None: no change
    (the same noise)."""
    after = picture if kind is None else changed_picture(kind, picture, landmarks)
    clean = torch.cat([picture.expand(CHANGE, -1, -1, -1), after.expand(frames - CHANGE, -1, -1, -1)])
    return noisy(clean, sigma), [landmarks.copy() for _ in range(frames)]


def inside(masks: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
    """Pixels inside the face masks (> 0.5) of both frames."""
    return (masks[t0] > 0.5) & (masks[t1] > 0.5)


def flicker(images: torch.Tensor, masks: torch.Tensor, step: tuple[int, int] = (0, 0)) -> float:
    """Mean absolute frame-to-frame change inside the face masks; ``step``: the clip's motion (x, y)
    in pixels a frame, taken out (frame t shifted back onto frame t - 1) before comparing."""
    dx, dy = step
    h, w = images.shape[1:3]
    vals = []
    for t in range(1, images.shape[0]):
        a = images[t, dy:, dx:]
        b = images[t - 1, :h - dy, :w - dx]
        m = (masks[t, dy:, dx:] > 0.5) & (masks[t - 1, :h - dy, :w - dx] > 0.5)
        vals.append(float((a - b).abs().mean(-1)[m].mean()))
    return float(np.mean(vals))


def outside_identical(images: torch.Tensor, masks: torch.Tensor, source: torch.Tensor) -> bool:
    """Pixels outside every face mask came back bit-identical."""
    out = (masks == 0)[..., None].expand_as(images)
    return bool(torch.equal(images[out], source[out]))


def _flicker_row(restorer, name: str, clip, landmarks, strength: float, label: str, step=(0, 0)) -> dict:
    from gpen.pipeline.restorer import FaceRestorer

    r = FaceRestorer(restorer, size=256)
    t0 = time.perf_counter()
    base = r.restore(clip, landmarks)
    t1 = time.perf_counter()
    filt = r.restore(clip, landmarks, temporal_consistency=strength)
    t2 = time.perf_counter()
    fb, ff = flicker(base.images, base.masks, step), flicker(filt.images, filt.masks, step)
    return {"clip": label, "picture": name, "restorer": type(restorer).__name__, "temporal_consistency": strength,
            "faces_per_frame": len(landmarks[0]), "flicker_frame_by_frame": fb, "flicker_filtered": ff,
            "flicker_ratio": ff / fb, "outside_identical": outside_identical(filt.images, filt.masks, clip),
            "seconds_frame_by_frame": t1 - t0, "seconds_filtered": t2 - t1}


def _lag_row(restorer, kind: str, sigma: float, frames: int) -> dict:
    from gpen.pipeline.restorer import FaceRestorer

    picture, lm = pictures()["astronaut"]
    r = FaceRestorer(restorer, size=256)
    clip, lms = step_clip(kind, picture, lm, frames, sigma)
    twin, _ = step_clip(None, picture, lm, frames, sigma)
    base, filt = r.restore(clip, lms), r.restore(clip, lms, temporal_consistency=1.0)
    tbase, tfilt = r.restore(twin, lms), r.restore(twin, lms, temporal_consistency=1.0)
    clean, _ = step_clip(kind, picture, lm, frames, 0.0)
    # where the picture itself changed (by more than 0.05, 5 x 5 mean), inside the masks
    moved = F.avg_pool2d((clean[CHANGE] - clean[CHANGE - 1]).abs().mean(-1)[None, None], 5, 1, 2)[0, 0] > 0.05
    m = inside(base.masks, CHANGE - 1, CHANGE) & moved
    change = float((base.images[CHANGE] - base.images[CHANGE - 1]).abs().mean(-1)[m].mean())
    row = {"clip": kind, "restorer": type(restorer).__name__, "noise": sigma, "change": change,
           "changed_pixels": int(m.sum()), "outside_identical": outside_identical(filt.images, filt.masks, clip)}
    for t in range(CHANGE - 2, CHANGE + 2):
        dist = (filt.images[t] - base.images[t]).abs().mean(-1)[m]
        leak = ((filt.images[t] - base.images[t]) - (tfilt.images[t] - tbase.images[t])).abs().mean(-1)[m]
        row[f"distance_{t - CHANGE:+d}"] = float(dist.mean()) / change
        row[f"leak_{t - CHANGE:+d}"] = float(leak.mean()) / change
    return row


def gate_rows(frames: int) -> list[dict]:
    """The gate's mean inside the face (aligned crop, feathered mask's inside) between neighbouring
    frames: noise only (should be open, near 1) and at each change (should be closed, near 0)."""
    from gpen.faces.align import estimate_similarity, template_points, warp_affine
    from gpen.pipeline.consistency import block_change, gate, low_pass

    rows = []
    for name, (picture, lm) in pictures().items():
        for sigma in NOISES:
            clip, lms = still_clip(picture, lm, 2, sigma)
            aff = torch.from_numpy(estimate_similarity(lm.astype(np.float64), template_points("gpen", 256))).float()
            idx = torch.arange(len(lm))
            low = [low_pass(warp_affine(clip[t:t + 1].permute(0, 3, 1, 2).expand(len(lm), -1, -1, -1).contiguous(),
                                        aff, idx, 256).clamp(0, 1)) for t in range(2)]
            g = [float(gate(low[0][k], low[1][k])[4:28, 4:28].mean()) for k in range(len(lm))]
            n = [float(block_change(low[0][k], low[1][k])[1]) for k in range(len(lm))]
            rows.append({"gate": "noise", "picture": name, "noise": sigma, "gate_mean": float(np.mean(g)),
                         "gate_min_face": float(np.min(g)), "noise_measure": float(np.mean(n))})
    picture, lm = pictures()["astronaut"]
    aff = torch.from_numpy(estimate_similarity(lm.astype(np.float64), template_points("gpen", 256))).float()
    for kind in ("light", "expression", "cut"):
        for sigma in NOISES:
            clip, _ = step_clip(kind, picture, lm, CHANGE + 1, sigma)
            crops = warp_affine(clip[CHANGE - 1:CHANGE + 1].permute(0, 3, 1, 2).contiguous(), aff.expand(2, -1, -1),
                                torch.arange(2), 256).clamp(0, 1)
            low = low_pass(crops)
            g = F.interpolate(gate(low[0], low[1])[None, None], size=(256, 256), mode="bilinear",
                              align_corners=False)[0, 0]
            # where the input crop changed by more than 0.05 (5x5 mean): the gate should be shut there
            diff = F.avg_pool2d((crops[1] - crops[0]).abs().mean(0)[None, None], 5, 1, 2)[0, 0]
            changed = diff > 0.05
            rows.append({"gate": kind, "picture": "astronaut", "noise": sigma,
                         "gate_mean_where_changed": float(g[changed].mean()) if changed.any() else None,
                         "changed_share": float(changed[32:224, 32:224].float().mean())})
    return rows


def filter_cost(size: int, repeats: int = 3) -> dict:
    """The filter's time for one face in the middle of its track (2 neighbours each side: 4 gates and
    the weighted mean) at crop ``size``, against one face through the seeded GPEN-BFR network of that
    size, alternating in this process (one thread; the machine is shared, so the ratio is the figure)."""
    from types import SimpleNamespace

    from gpen.model.layouts import seeded_state_dict
    from gpen.model.loader import load_model
    from gpen.pipeline.consistency import TrackFilter, low_pass

    net = load_model(seeded_state_dict(f"GPEN-BFR-{size}"))
    g = torch.Generator().manual_seed(0)
    crops = torch.rand(5, 3, size, size, generator=g)
    faces = [SimpleNamespace(track=0, image_index=t) for t in range(5)]
    filt_ms, net_ms = [], []
    with torch.inference_mode():
        net(crops[:1] * 2 - 1)
        for _ in range(repeats):
            t0 = time.perf_counter()
            filt = TrackFilter(1.0)  # new each time: the gates are computed, not cached
            filt.add(faces, crops, low_pass(crops), crops)
            filt.filtered((0, 2), crops[2])
            t1 = time.perf_counter()
            net(crops[:1] * 2 - 1)
            t2 = time.perf_counter()
            filt_ms.append(1000 * (t1 - t0))
            net_ms.append(1000 * (t2 - t1))
    return {"size": size, "filter_ms_per_face": float(np.median(filt_ms)), "network_ms_per_face": float(np.median(net_ms)),
            "filter_share_of_network": float(np.median(filt_ms) / np.median(net_ms))}


def run(args: argparse.Namespace) -> dict:
    """Every measurement; returns the report written with --json."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    restorers = [TextureRestorer(256)]
    if not args.no_gpen:
        from gpen.model.layouts import seeded_state_dict
        from gpen.model.loader import load_model

        restorers.append(load_model(seeded_state_dict("GPEN-BFR-256")))
    rows = []
    for restorer in restorers:
        for name, (picture, lm) in pictures().items():
            if name == "solvay" and not isinstance(restorer, TextureRestorer):
                continue  # the seeded network on 7 faces a frame: slow on a CPU and measures nothing more
            for sigma in NOISES:
                clip, lms = still_clip(picture, lm, args.frames, sigma)
                for strength in STRENGTHS if isinstance(restorer, TextureRestorer) else (1.0,):
                    rows.append(_flicker_row(restorer, name, clip, lms, strength, f"still noise {sigma}"))
                    print(rows[-1])
        picture, lm = pictures()["astronaut"]
        clip, lms = moving_clip(picture, lm, args.frames, 0.02)
        rows.append(_flicker_row(restorer, "astronaut", clip, lms, 1.0, "moving 2,1 px/frame, noise 0.02", (2, 1)))
        print(rows[-1])
    lags = [_lag_row(r, kind, sigma, args.frames) for r in restorers for kind in ("light", "expression", "cut")
            for sigma in ((0.0,) + NOISES if isinstance(r, TextureRestorer) else (0.0, NOISES[0]))]
    for row in lags:
        print(row)
    gates = gate_rows(args.frames)
    for row in gates:
        print(row)
    costs = [filter_cost(size) for size in (256, 512)]
    for row in costs:
        print(row)
    report = {"bench": "temporal", "frames": args.frames, "change_frame": CHANGE, "threads": torch.get_num_threads(),
              "flicker": rows, "lag": lags, "gate": gates, "cost": costs}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return report
