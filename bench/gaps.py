"""Is a filled-in face there? Sets :data:`gpen.faces.gaps.FILL_SIMILARITY`.

    python -m bench gaps --json bench/results/cpu_gap_fill.json

A filled face (interpolated between the detections of its track on either side) is compared with
those detections (:func:`gpen.faces.gaps.crop_similarity`, the better of the two). Measured on
real pictures, three frames each (before, gap, after):

- **pasted**: the astronaut's face (0.3x, 0.6x and 1x) pasted into every picture of
  ``bench.shots.PICTURES`` and the Solvay photo, moving 40 px a frame. *filled*: the gap frame
  shows the face off the straight line by 0, 5 % and 10 % of its patch (0.23 and 0.46 of its eye
  distance), also relit (x0.8) and with noise (sigma 0.03); *empty*: the gap frame shows the picture alone (the face left or is hidden),
  also when the face was half out of the frame at the border on either side.
- **solvay**: every one of the 29 Solvay faces (MTCNN landmarks) with the photo shifted 3 px a frame;
  *filled*: the face in the gap frame; *empty*: the person painted out (OpenCV inpainting of the
  whole compared face region and a margin of a tenth of it).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from bench.common import REPO
from bench.shots import face_patch, pictures


def add_parser(sub) -> None:
    p = sub.add_parser("gaps", help="crop similarity of filled faces: face there vs gone (gap filling)")
    p.add_argument("--json")
    p.add_argument("--seed", type=int, default=0)


def _similarity(frames: list[np.ndarray], lms: list[np.ndarray]) -> float:
    """The gap frame's (frames[1]) crop at lms[1] against the neighbours' crops, the better one."""
    from gpen.faces.gaps import crop_similarity, grey_crops

    images = torch.from_numpy(np.stack(frames).astype(np.float32))
    grey, inside = grey_crops(images, np.stack(lms), np.arange(3))
    s = crop_similarity(grey[[1, 1]], grey[[0, 2]], inside[[1, 1]], inside[[0, 2]])
    return float(s.max())


def _paste(frame: np.ndarray, face: np.ndarray, x: float, y: float) -> None:
    h, w = frame.shape[:2]
    side = face.shape[0]
    x, y = int(round(x)), int(round(y))
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + side, w), min(y + side, h)
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = face[y0 - y:y1 - y, x0 - x:x1 - x]


def run(args: argparse.Namespace) -> list[dict]:
    import cv2

    from bench.shots import view
    from gpen.faces.align import estimate_similarity, template_points
    from gpen.faces.selection import boxes_from_affine
    from gpen.faces.gaps import FILL_SIMILARITY

    rng = np.random.default_rng(args.seed)
    marks = json.loads((REPO / "tests" / "fixtures" / "geometry" / "landmarks.json").read_text())["images"]
    astro = np.asarray(marks["skimage.data.astronaut"]["faces"][0]["landmarks5"], np.float64)
    rows = []
    for pname, pic in pictures().items():
        bg = np.clip(view(pic), 0, 1).astype(np.float32)
        h, w = bg.shape[:2]
        for scale in (0.3, 0.6, 1.0):
            side = int(round(200 * scale))
            face = face_patch(side)
            lm0 = (astro - [110.0, 40.0]) * side / 220  # face_patch cuts astronaut[40:260, 110:330]
            starts = {"middle": (w / 2 - side / 2 - 40, h / 2 - side / 2),
                      "left_border": (-side / 2 + 40, h / 2 - side / 2),
                      "right_border": (w - side / 2 - 40, h / 2 - side / 2)}
            for where, (x, y) in starts.items():
                path = [(x + 40 * t * (1 if where != "right_border" else -1) * (0 if "border" in where else 1), y)
                        for t in range(3)]
                lms = [lm0 + p for p in path]
                cases = {"empty": None}
                if where == "middle":
                    for off in (0.0, 0.05, 0.1):
                        d = rng.normal(size=2)
                        d = d / np.linalg.norm(d) * off * side
                        cases[f"filled_off{off}"] = (d, 1.0, 0.0)
                        cases[f"filled_off{off}_relit"] = (d, 0.8, 0.0)
                        cases[f"filled_off{off}_noise"] = (d, 1.0, 0.03)
                else:
                    cases["filled_off0.0"] = (np.zeros(2), 1.0, 0.0)
                for case, how in cases.items():
                    frames = []
                    for t, (px, py) in enumerate(path):
                        f = bg.copy()
                        if t != 1:
                            _paste(f, face, px, py)
                        elif how is not None:
                            d, gain, sigma = how
                            _paste(f, np.clip(face * gain + rng.normal(0, sigma, face.shape), 0, 1).astype(np.float32),
                                   px + d[0], py + d[1])
                        frames.append(f)
                    rows.append({"set": "pasted", "picture": pname, "scale": scale, "where": where,
                                 "case": case, "kind": "empty" if how is None else "filled",
                                 "similarity": round(_similarity(frames, lms), 5)})
    solvay = cv2.imread(str(REPO / "assets" / "solvay_conference_1927.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    solvay = np.ascontiguousarray(solvay)
    for k, f in enumerate(marks["solvay_conference_1927.png"]["faces"]):
        lm = np.asarray(f["landmarks5"], np.float64)
        affine = estimate_similarity(lm[None], template_points("gpen", 64))
        x0, y0, x1, y1 = boxes_from_affine(affine, 64)[0]
        mx, my = (x1 - x0) / 10, (y1 - y0) / 10
        x0, y0, x1, y1 = (int(round(v)) for v in (x0 - mx, y0 - my, x1 + mx, y1 + my))
        hole = np.zeros(solvay.shape[:2], np.uint8)
        hole[max(y0, 0):y1, max(x0, 0):x1] = 255
        empty = cv2.inpaint(solvay, hole, 5, cv2.INPAINT_TELEA)
        for kind, middle in (("filled", solvay), ("empty", empty)):
            frames, lms = [], []
            for t, src in enumerate((solvay, middle, solvay)):
                m = np.float32([[1, 0, 3 * t], [0, 1, 0]])
                frames.append(cv2.warpAffine(src, m, src.shape[1::-1], borderMode=cv2.BORDER_REFLECT).astype(np.float32)
                              / 255.0)
                lms.append(lm + [3 * t, 0])
            rows.append({"set": "solvay", "picture": f"solvay face {k}", "kind": kind, "case": kind,
                         "similarity": round(_similarity(frames, lms), 5)})
    filled = np.array([r["similarity"] for r in rows if r["kind"] == "filled"])
    empty = np.array([r["similarity"] for r in rows if r["kind"] == "empty"])
    summary = {"kind": "summary", "filled": int(len(filled)), "empty": int(len(empty)),
               "filled_min": float(filled.min()), "filled_p01": float(np.percentile(filled, 1)),
               "filled_p05": float(np.percentile(filled, 5)), "filled_median": float(np.median(filled)),
               "empty_max": float(empty.max()), "empty_p99": float(np.percentile(empty, 99)),
               "empty_p95": float(np.percentile(empty, 95)), "empty_median": float(np.median(empty)),
               "threshold": FILL_SIMILARITY,
               "filled_below_threshold": int((filled < FILL_SIMILARITY).sum()),
               "empty_at_or_above_threshold": int((empty >= FILL_SIMILARITY).sum()),
               "weakest_filled": min((r for r in rows if r["kind"] == "filled"), key=lambda r: r["similarity"]),
               "most_alike_empty": max((r for r in rows if r["kind"] == "empty"), key=lambda r: r["similarity"])}
    print(json.dumps(summary, indent=1))
    return [summary] + rows
