"""How far apart are "the same face, re-encoded" and "another person's face"? Sets REFERENCE_THRESHOLD.

    python -m bench reference --json bench/results/cpu_reference_threshold.json

A face counts as changed from the reference picture (``restore(reference=...)``) when the mean
absolute difference over its face region (:func:`gpen.faces.reference.reference_differences`)
exceeds the threshold. The threshold must sit above what re-encoding does to an untouched face
and below what any face swap does. Both are measured here on real faces: the astronaut
(``skimage.data.astronaut()``) and the 29 faces of the Solvay 1927 photograph
(``assets/solvay_conference_1927.png``), with the MTCNN landmarks of
``tests/fixtures/geometry/landmarks.json``.

- **noise**: the picture re-encoded as JPEG at quality 75, 80, 85, 90, 95 (OpenCV, 4:2:0) compared
  with the original, and two re-encodings at different qualities compared with each other.
- **swap**: every face replaced by each other person's face (another face of the same photo,
  or the astronaut for the Solvay faces and the Solvay faces for the astronaut), warped onto the
  target's landmarks (GPEN alignment, 256 px crop) and blended in with the feathered paste mask, as
  a face swapper pastes its result; once as is and once colour-matched to the target face (mean and
  spread per channel, as swappers blend colour), which is the harder case; and once colour-matched
  and mixed half and half with the original face (a swap at 50% strength), the hardest. The swapped
  picture is also JPEG-encoded at quality 95 (a swapper's output saved as a file).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from bench.common import REPO

QUALITIES = (75, 80, 85, 90, 95)


def add_parser(sub) -> None:
    p = sub.add_parser("reference", help="measure face differences of JPEG noise vs face swaps (reference_threshold)")
    p.add_argument("--json")


def _faces() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, RGB uint8 image, landmarks (K, 5, 2)) of the astronaut and the Solvay photograph."""
    import cv2
    from skimage import data

    marks = json.loads((REPO / "tests" / "fixtures" / "geometry" / "landmarks.json").read_text())["images"]

    def lms(name):
        return np.asarray([f["landmarks5"] for f in marks[name]["faces"]], np.float32)

    solvay = cv2.imread(str(REPO / "assets" / "solvay_conference_1927.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    return [("astronaut", data.astronaut(), lms("skimage.data.astronaut")),
            ("solvay", np.ascontiguousarray(solvay), lms("solvay_conference_1927.png"))]


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.astype(np.float32) / 255.0)[None]


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])


def _diffs(image: np.ndarray, reference: np.ndarray, lms: np.ndarray) -> np.ndarray:
    from gpen.faces.reference import reference_differences

    return reference_differences(_tensor(image), _tensor(reference), lms, np.zeros(len(lms), np.int64))


def _aligned(rgb: np.ndarray, lms: np.ndarray, size: int = 256) -> tuple[torch.Tensor, np.ndarray]:
    """GPEN-aligned crops (K, 3, S, S) of the faces and their image -> crop matrices."""
    from gpen.faces.align import estimate_similarity, template_points, warp_affine

    affine = estimate_similarity(lms, template_points("gpen", size)).astype(np.float32)
    crops = warp_affine(_tensor(rgb).permute(0, 3, 1, 2), torch.from_numpy(affine), None, size)
    return crops, affine


def _swap(target: np.ndarray, target_lms: np.ndarray, faces: torch.Tensor, colour: bool, mix: float = 1.0
          ) -> np.ndarray:
    """``target`` with face k replaced by ``faces[k]`` (aligned crops of other people; ``mix`` < 1 mixes
    them with the target's own face), as uint8 RGB."""
    from gpen.faces.align import invert_affine
    from gpen.faces.color import match_color
    from gpen.faces.paste import feather_mask, paste_back

    own, affine = _aligned(target, target_lms, faces.shape[-1])
    if colour:
        weight = feather_mask(faces.shape[-1])[None].expand(len(faces), -1, -1)
        faces = match_color(faces, own, weight, space="rgb")
    inverse = torch.from_numpy(invert_affine(affine.astype(np.float64))).float()
    out, _ = paste_back(_tensor(target), faces, own if mix < 1 else None, inverse,
                        torch.zeros(len(faces), dtype=torch.long), strength=mix)
    return (out[0].clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)


def run(args: argparse.Namespace) -> list[dict]:
    """Measure and print the noise and swap differences; rows for ``--json``."""
    (_, astro, astro_lms), (_, solvay, solvay_lms) = _faces()
    rows: list[dict] = []
    for name, rgb, lms in (("astronaut", astro, astro_lms), ("solvay", solvay, solvay_lms)):
        for q in QUALITIES:
            d = _diffs(_jpeg(rgb, q), rgb, lms)
            rows.append({"kind": "noise", "image": name, "case": f"jpeg q{q} vs original", "faces": len(d),
                         "max": float(d.max()), "mean": float(d.mean()), "min": float(d.min())})
        for qa, qb in ((75, 95), (75, 85)):
            d = _diffs(_jpeg(rgb, qa), _jpeg(rgb, qb), lms)
            rows.append({"kind": "noise", "image": name, "case": f"jpeg q{qa} vs jpeg q{qb}", "faces": len(d),
                         "max": float(d.max()), "mean": float(d.mean()), "min": float(d.min())})
    astro_crop, _ = _aligned(astro, astro_lms)
    solvay_crops, _ = _aligned(solvay, solvay_lms)
    k = len(solvay_lms)
    for colour, mix in ((False, 1.0), (True, 1.0), (True, 0.5)):
        label = ("colour-matched" if colour else "as is") + (f", mixed {mix:.0%} with the original" if mix < 1 else "")
        # Solvay: every face swapped with face j of the same photo (j itself swapped with the astronaut)
        found = []
        for j in range(k):
            sources = solvay_crops[j:j + 1].expand(k, -1, -1, -1).clone()
            sources[j] = astro_crop[0]
            swapped = _jpeg(_swap(solvay, solvay_lms, sources, colour, mix), 95)
            found.append(_diffs(swapped, solvay, solvay_lms))
        d = np.concatenate(found)
        rows.append({"kind": "swap", "image": "solvay", "case": f"other person's face, {label}, jpeg q95",
                     "faces": len(d), "max": float(d.max()), "mean": float(d.mean()), "min": float(d.min())})
        d = np.concatenate([_diffs(_jpeg(_swap(astro, astro_lms, solvay_crops[j:j + 1], colour, mix), 95), astro,
                                   astro_lms) for j in range(k)])
        rows.append({"kind": "swap", "image": "astronaut", "case": f"other person's face, {label}, jpeg q95",
                     "faces": len(d), "max": float(d.max()), "mean": float(d.mean()), "min": float(d.min())})
    noise_max = max(r["max"] for r in rows if r["kind"] == "noise")
    swap_min = min(r["min"] for r in rows if r["kind"] == "swap")
    full_min = min(r["min"] for r in rows if r["kind"] == "swap" and "mixed" not in r["case"])
    from gpen.faces.reference import REFERENCE_THRESHOLD as t

    rows.append({"kind": "summary", "noise_max": noise_max, "swap_min": swap_min, "full_swap_min": full_min,
                 "geometric_mean_noise_max_swap_min": float(np.sqrt(noise_max * swap_min)), "threshold": t,
                 "threshold_over_noise_max": t / noise_max, "swap_min_over_threshold": swap_min / t,
                 "full_swap_min_over_threshold": full_min / t,
                 "rule": "threshold = the geometric mean of the largest noise difference and the smallest swap "
                         "difference (50% swaps included), rounded to 0.005"})
    print("kind | image | case | faces | min | mean | max")
    for r in rows[:-1]:
        print(f"{r['kind']} | {r['image']} | {r['case']} | {r['faces']} | {r['min']:.4f} | {r['mean']:.4f} | "
              f"{r['max']:.4f}")
    print(f"noise max {noise_max:.4f}, swap min {swap_min:.4f} (full swaps {full_min:.4f}), geometric mean "
          f"{np.sqrt(noise_max * swap_min):.4f}; threshold {t}: {t / noise_max:.1f}x the noise, "
          f"{swap_min / t:.1f}x under the weakest swap, {full_min / t:.1f}x under full swaps")
    return rows
