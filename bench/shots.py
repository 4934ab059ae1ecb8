"""What separates a cut from motion? Sets :data:`gpen.faces.shots.CUT_THRESHOLD`.

    python -m bench shots --json bench/results/cpu_shot_cuts.json

Clips are made from real pictures: the Solvay 1927 photograph (``assets/``) and the
``skimage.data`` pictures below, each seen through a 288 x 384 window. **Motion** (consecutive
frames of one clip, 6 frames each): still frames with sensor noise (sigma 0.02 and 0.06),
pans of 12, 48 and 128 px per frame (a third of the frame width) sideways and 48 down, zooms
of 4 % and 12 % per frame, brightness ramps (x0.85 and x1.15 per frame), a contrast ramp,
a hand-held shake (random shifts of +-20 px and 2 degrees), a pan with a fade, and the
astronaut's face moving 55 px per frame across the still picture. **Cuts**: the last frame of
one picture's clip followed by the first frame of another's (every ordered pair of different
pictures, each clip with a motion drawn at random). The rows hold every score's two parts
(:func:`gpen.faces.shots.cut_parts`) and the summary the extremes the threshold must separate.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from bench.common import REPO

FRAME = (288, 384)
PICTURES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "hubble_deep_field",
            "immunohistochemistry", "moon", "page", "text", "retina", "colorwheel", "brick", "grass", "gravel",
            "clock", "cell")


def add_parser(sub) -> None:
    p = sub.add_parser("shots", help="cut scores of real motion vs cuts (shot boundaries)")
    p.add_argument("--json")
    p.add_argument("--seed", type=int, default=0)


def pictures() -> dict[str, np.ndarray]:
    """name -> RGB float32 0..1 picture."""
    import cv2
    from skimage import data

    out = {}
    for name in PICTURES:
        x = np.asarray(getattr(data, name)())
        x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
        out[name] = np.repeat(x[..., None], 3, -1) if x.ndim == 2 else x[..., :3]
    solvay = cv2.imread(str(REPO / "assets" / "solvay_conference_1927.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    out["solvay"] = np.ascontiguousarray(solvay).astype(np.float32) / 255.0
    return out


def view(pic: np.ndarray, dx: float = 0.0, dy: float = 0.0, scale: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """A FRAME-sized window on ``pic`` (which covers it at scale 1), shifted/zoomed/turned about the centre."""
    import cv2

    h, w = FRAME
    ph, pw = pic.shape[:2]
    cover = max(h / ph, w / pw) * 1.05 * scale
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, cover)
    m[:, 2] += [w / 2 - pw / 2 - dx, h / 2 - ph / 2 - dy]
    return cv2.warpAffine(pic, m, (w, h), flags=cv2.INTER_AREA if cover < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def face_patch(size: int = 96) -> np.ndarray:
    """The astronaut's face (size x size RGB float)."""
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut()[40:260, 110:330].astype(np.float32) / 255.0, (size, size),
                      interpolation=cv2.INTER_AREA)


def motions(rng: np.random.Generator) -> dict:
    """name -> function (picture, frame t) -> frame."""
    face = face_patch()
    shake = rng.uniform(-1, 1, size=(6, 3)) * [20, 20, 2]

    def moving_face(p, t):
        f = view(p).copy()
        x = 10 + 55 * t
        f[150:246, x:x + 96] = face
        return f

    return {
        "noise_0.02": lambda p, t: view(p) + rng.normal(0, 0.02, FRAME + (3,)).astype(np.float32),
        "noise_0.06": lambda p, t: view(p) + rng.normal(0, 0.06, FRAME + (3,)).astype(np.float32),
        "pan_12px": lambda p, t: view(p, dx=12 * t - 30),
        "pan_48px": lambda p, t: view(p, dx=48 * t - 120),
        "pan_128px": lambda p, t: view(p, dx=128 * t - 320),
        "tilt_48px": lambda p, t: view(p, dy=48 * t - 120),
        "zoom_4pct": lambda p, t: view(p, scale=1.04 ** t),
        "zoom_12pct": lambda p, t: view(p, scale=1.12 ** t),
        "darken_0.85": lambda p, t: view(p) * 0.85 ** t,
        "brighten_1.15": lambda p, t: view(p) * 1.15 ** t,
        "contrast_0.8": lambda p, t: (view(p) - 0.5) * 0.8 ** t + 0.5,
        "shake": lambda p, t: view(p, dx=shake[t, 0], dy=shake[t, 1], angle=shake[t, 2]),
        "pan_48px_fade": lambda p, t: view(p, dx=48 * t - 120) * 0.9 ** t,
        "face_55px": moving_face,
    }


def run(args: argparse.Namespace) -> list[dict]:
    from gpen.faces.shots import CUT_THRESHOLD, cut_parts

    rng = np.random.default_rng(args.seed)
    pics = pictures()
    moves = motions(rng)
    clips: dict[tuple[str, str], torch.Tensor] = {}
    rows = []
    for pname, pic in pics.items():
        for mname, fn in moves.items():
            clip = torch.from_numpy(np.clip(np.stack([fn(pic, t) for t in range(6)]), 0, 1).astype(np.float32))
            clips[pname, mname] = clip
            hist, struct = cut_parts(clip)
            for t, (a, b) in enumerate(zip(hist, struct)):
                rows.append({"kind": "motion", "picture": pname, "motion": mname, "frame": t,
                             "hist": round(float(a), 5), "struct": round(float(b), 5),
                             "score": round(float(min(a, b)), 5)})
    names = list(pics)
    for a in names:
        for b in names:
            if a == b:
                continue
            ma, mb = rng.choice(list(moves), 2)
            pair = torch.stack([clips[a, ma][-1], clips[b, mb][0]])
            hist, struct = cut_parts(pair)
            rows.append({"kind": "cut", "picture": f"{a}->{b}", "motion": f"{ma}->{mb}",
                         "hist": round(float(hist[0]), 5), "struct": round(float(struct[0]), 5),
                         "score": round(float(min(hist[0], struct[0])), 5)})
    motion = np.array([r["score"] for r in rows if r["kind"] == "motion"])
    cut = np.array([r["score"] for r in rows if r["kind"] == "cut"])
    worst_motion = max((r for r in rows if r["kind"] == "motion"), key=lambda r: r["score"])
    weakest_cut = min((r for r in rows if r["kind"] == "cut"), key=lambda r: r["score"])
    summary = {"kind": "summary", "motion_pairs": int(len(motion)), "cut_pairs": int(len(cut)),
               "motion_max": float(motion.max()), "motion_p99": float(np.percentile(motion, 99)),
               "cut_min": float(cut.min()), "cut_p01": float(np.percentile(cut, 1)),
               "cuts_below_threshold": int((cut <= CUT_THRESHOLD).sum()),
               "motion_above_threshold": int((motion > CUT_THRESHOLD).sum()),
               "threshold": CUT_THRESHOLD, "worst_motion": worst_motion, "weakest_cut": weakest_cut}
    for kind in ("motion", "cut"):
        for q in (0, 50, 90, 99, 100):
            summary[f"{kind}_q{q}"] = round(float(np.percentile(motion if kind == "motion" else cut, q)), 5)
    by_motion = {}
    for m in moves:
        s = [r["score"] for r in rows if r["kind"] == "motion" and r["motion"] == m]
        by_motion[m] = round(float(max(s)), 5)
    summary["motion_max_by_kind"] = by_motion
    print(json.dumps(summary, indent=1))
    return [summary] + rows
