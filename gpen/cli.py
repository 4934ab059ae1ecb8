"""Command line: ``python -m gpen restore|download|info`` (see ``--help``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

from .faces.detect import RETINAFACE_MODELS
from .errors import GPENError, InvalidInputError
from .faces.align import TEMPLATES
from .faces.occlusion import OCCLUSION_CHOICES, parse_occluders
from .faces.parsing import DEFAULT_REGIONS, REGIONS, parse_regions
from .faces.reference import REFERENCE_THRESHOLD
from .faces.selection import SORT_ORDERS
from .frames import MAX_SCALE
from .options import check_options
from .runtime import tune_cpu_allocator

log = logging.getLogger("gpen")


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    return "fp16" if device.type in ("cuda", "mps") else "fp32"


def load_landmarks(path: str) -> dict[str, np.ndarray]:
    """File name -> (K, 5, 2) from JSON ``{"images": {name: {"faces": [{"landmarks5": ...}]}}}``."""
    try:
        data = json.loads(Path(path).read_text())
        images = data["images"]
        return {name: np.asarray([f["landmarks5"] for f in entry["faces"]], dtype=np.float32).reshape(-1, 5, 2)
                for name, entry in images.items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidInputError(f"{path}: not a landmarks file of the form "
                                f'{{"images": {{"name.png": {{"faces": [{{"landmarks5": [[x, y] x5]}}]}}}}}} ({e}).') from None


def _reference_for(path: Path, reference: Path | None) -> Path | None:
    """The reference picture of input ``path``: ``reference`` itself (a file), or the file of the same
    name in the ``reference`` folder."""
    if reference is None:
        return None
    ref = reference / path.name if reference.is_dir() else reference
    if not ref.is_file():
        raise InvalidInputError(f"no reference picture for {path.name}: {ref} does not exist (--reference takes "
                                f"the picture before the swap, or a folder holding one of the same name per input).")
    return ref


def cmd_restore(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .imageio import list_images, read_image, write_image
    from .model.loader import load_model
    from .weights.models import resolve_model
    from .restorer import FaceRestorer

    files = list_images(args.inputs)
    landmarks = load_landmarks(args.landmarks) if args.landmarks else None
    reference = Path(args.reference) if args.reference else None
    if reference is not None and not reference.exists():
        raise InvalidInputError(f"--reference {reference}: no such file or folder.")
    options = dict(strength=args.strength, template=args.template, detector=args.detector,
                   detection_threshold=args.threshold, face_selection=args.select, sort=args.sort,
                   min_face_size=args.min_face_size, parsing=args.parsing, color_correction=args.color_correction,
                   reference_threshold=args.reference_threshold, max_gap=args.max_gap, min_track=args.min_track,
                   chunk_size=args.chunk_size, allow_download=not args.no_download,
                   keep_crops="aligned" if args.save_crops else "none", regions=args.regions,
                   occlusion=args.occlusion, upscale=args.upscale)
    check_options(strength=args.strength, template=args.template, face_selection=args.select, sort=args.sort,
                  detection_threshold=args.threshold, min_face_size=args.min_face_size,
                  reference_threshold=args.reference_threshold, max_gap=args.max_gap, min_track=args.min_track)
    if args.regions is not None:
        if not args.parsing:
            raise InvalidInputError("--regions chooses face-parsing classes: add --parsing.")
        parse_regions(args.regions)
    parse_occluders(args.occlusion)
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: autotuned convolutions pay back at once
    model_path = resolve_model(args.model, allow_download=not args.no_download, progress=not args.quiet)
    net = load_model(model_path, device=device, dtype=dtype)
    if args.compile:
        from .model.network import GPEN

        if not isinstance(net, GPEN):
            raise InvalidInputError(f"--compile needs a PyTorch GPEN network; {args.model} runs in onnxruntime.")
        net.compile()
    restorer = FaceRestorer(net)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    # one batch of frames (--track-faces) or one image at a time
    groups = [files] if args.track_faces else [[f] for f in files]
    total_faces = 0
    for group in tqdm(groups, desc="restoring", unit="image", disable=args.quiet or len(groups) < 2, file=sys.stderr):
        read = [read_image(path) for path in group]
        if len({tuple(img.shape) for img, _ in read}) > 1:
            raise InvalidInputError("--track-faces restores the inputs as the frames of one video: they must all "
                                    "have the same size and channels.")
        given = None
        if landmarks is not None:
            missing = [p.name for p in group if p.name not in landmarks]
            if len(group) == 1 and missing:
                log.warning("%s is not in %s: detecting its faces", missing[0], args.landmarks)
            else:
                given = [landmarks.get(p.name) for p in group]
                if missing:
                    log.warning("%d frame(s) not in %s have no faces (tracked faces are interpolated there): %s",
                                len(missing), args.landmarks, ", ".join(missing[:5]))
        refs = [_reference_for(p, reference) for p in group]
        ref = None if reference is None else torch.stack([read_image(r)[0] for r in refs])
        result = restorer.restore(torch.stack([img for img, _ in read]), given, reference=ref,
                                  track_faces=True if args.track_faces else None, **options)
        counts = list(result.faces_per_image)
        crop = 0
        for k, (path, (_, bits)) in enumerate(zip(group, read)):
            write_image(out_dir / f"{path.stem}.png", result.images[k], bits)
            for j in range(counts[k] if result.crops.shape[0] else 0):
                write_image(out_dir / f"{path.stem}_face{j:02d}_crop.png", result.crops[crop + j])
            crop += counts[k]
        total_faces += len(result.faces)
        log.info("%s: %s", group[0].name if len(group) == 1 else f"{len(group)} frames", result.info)
    log.info("%d image(s), %d face(s) restored into %s", len(files), total_faces, out_dir)
    return 0


ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEMO_IMAGE = ASSETS / "solvay_conference_1927.png"


def cmd_demo(args: argparse.Namespace) -> int:
    """Restore the bundled sample photo (29 faces, landmarks bundled so no detector is needed).

    Uses ``--model`` (GPEN-BFR-512 by default), found in or downloaded to the models folder. Where the
    weights cannot be had (no network), the same pipeline runs with seeded random weights of the real layout and
    the output is named ``*_pipeline-check.png``: a check that everything runs, not a restoration.
    """
    from .errors import MissingWeightsError
    from .imageio import read_image, write_image
    from .model.layouts import seeded_state_dict
    from .model.loader import load_model
    from .weights.models import resolve_model
    from .restorer import FaceRestorer

    device = pick_device(args.device)
    dtype = pick_dtype("auto", device)
    suffix = ""
    model = getattr(args, "model", "GPEN-BFR-512")
    try:
        source = resolve_model(model, allow_download=not args.no_download, progress=not args.quiet)
    except MissingWeightsError as e:
        log.warning("%s", e)
        log.warning("%s is not available: running the pipeline with RANDOM weights of the same "
                    "layout. The output shows that everything runs; it is NOT a restoration.", model)
        source, suffix = seeded_state_dict(model), "_pipeline-check"
    net = load_model(source, device=device, dtype=dtype)
    image, bits = read_image(DEMO_IMAGE)
    landmarks = load_landmarks(str(DEMO_IMAGE.with_name(DEMO_IMAGE.stem + "_landmarks.json")))[DEMO_IMAGE.name]
    restorer = FaceRestorer(net)
    progress = _bar(len(landmarks), "faces", args.quiet)
    result = restorer.restore(image[None], [landmarks], progress=progress)
    out_dir = Path(args.output)
    path = write_image(out_dir / f"{DEMO_IMAGE.stem}{suffix}.png", result.images[0], bits)
    write_image(out_dir / f"{DEMO_IMAGE.stem}{suffix}_mask.png", result.masks[0][..., None])
    log.info("%s -> %s (%s)", DEMO_IMAGE.name, path, result.info)
    return 0


def _bar(total: int, unit: str, quiet: bool):
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, disable=quiet, file=sys.stderr)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def format_known_file(spec) -> str:
    """One ``--list`` line: name, size, sha256, URLs (those the size/sha256 do not describe are marked)."""
    size = f"{spec.size:,} bytes" if spec.size is not None else "size not published"
    sha = spec.sha256 or "sha256 not published"
    urls = " ".join(u if spec.hashed(u) else f"{u} (layout-checked)" for u in spec.urls)
    return f"{spec.name}  {size}  {sha}  {urls}"


def cmd_download(args: argparse.Namespace) -> int:
    from .weights.models import download_file, download_url, files_for
    from .weights.registry import REGISTRY, gpen_files

    if args.list:
        for spec in REGISTRY.values():
            print(format_known_file(spec))
        return 0
    if args.url:
        if args.names or args.all:
            raise InvalidInputError("--url downloads one file: give no names and no --all with it")
        log.info("saved %s", download_url(args.url, args.dir, sha256=args.sha256, name=args.name,
                                          progress=not args.quiet))
        return 0
    if args.sha256 or args.name:
        raise InvalidInputError("--sha256 and --name go with --url")
    if args.all:
        specs = gpen_files(onnx=args.onnx)
    elif args.names:
        specs = [files_for(n, onnx=args.onnx) for n in args.names]
    else:
        raise InvalidInputError("name the files to download (e.g. GPEN-BFR-512), or use --all, --list or --url")
    failed = 0
    for spec in dict.fromkeys(specs):
        try:
            log.info("saved %s", download_file(spec, args.dir, progress=not args.quiet))
        except GPENError as e:
            failed += 1
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2 if failed else 0


def cmd_info(args: argparse.Namespace) -> int:
    from .model.loader import load_model

    net = load_model(args.model)
    c = net.config
    if c is None:  # an .onnx graph run by onnxruntime: only its signature is known
        print(json.dumps({"file": args.model, "size": net.size, "runtime": "onnxruntime", "batch": net.batch}, indent=1))
        return 0
    print(json.dumps({"file": args.model, "size": c.size, "style_dim": c.style_dim, "n_mlp": c.n_mlp,
                      "channel_multiplier": c.channel_multiplier, "narrow": c.narrow, "runtime": "pytorch",
                      "parameters": sum(p.numel() for p in net.parameters())}, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gpen", description="GPEN blind face restoration.")
    p.add_argument("-q", "--quiet", action="store_true", help="only print errors")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("restore", help="restore the faces in images", description="Restore the faces in "
                       "images; writes <stem>.png per input into the output folder.")
    r.add_argument("inputs", nargs="+", help="image files or folders")
    r.add_argument("--model", required=True, help="weights file (.pth/.safetensors) or a released model "
                   "name such as GPEN-BFR-512 (found in, or downloaded to, the facerestore_models folder)")
    r.add_argument("-o", "--output", required=True, help="output folder")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    r.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="network precision (auto: fp16 on GPUs, fp32 on CPU)")
    r.add_argument("--strength", type=float, default=1.0, help="mix of restored (1) and original (0) face")
    r.add_argument("--template", default="gpen", choices=TEMPLATES, help="alignment template")
    r.add_argument("--landmarks", help="JSON file with 5-point landmarks per image (skips detection)")
    r.add_argument("--save-crops", action="store_true",
                   help="also write each aligned input crop as <stem>_faceNN_crop.png")
    r.add_argument("--detector", default="retinaface_resnet50", choices=tuple(RETINAFACE_MODELS))
    r.add_argument("--threshold", type=float, default=0.5, help="detection score threshold")
    r.add_argument("--select", default="all", help="faces to restore: all, largest, or indices like 0,2")
    r.add_argument("--sort", default="left-to-right", choices=SORT_ORDERS,
                   help="face order for --select indices (score: ties keep the input order)")
    r.add_argument("--min-face-size", type=float, default=0, help="skip faces smaller than this (pixels)")
    r.add_argument("--parsing", action="store_true", help="blend with a face-parsing mask")
    r.add_argument("--regions", help="with --parsing: comma-separated regions taken from the restored face, the rest "
                   f"stays original; from {', '.join(REGIONS)} (default: {','.join(DEFAULT_REGIONS)}; 'teeth' is "
                   "the parsers' inner-mouth class, the same pixels as 'mouth')")
    r.add_argument("--occlusion", default="none", choices=OCCLUSION_CHOICES,
                   help="keep what covers a face (hands, microphones, hair) with FaceFusion's XSeg occluder "
                   "(xseg_N.onnx in the facedetection folder, downloaded when missing; needs onnxruntime; "
                   "all: the minimum of the three)")
    r.add_argument("--upscale", type=int, default=1, choices=range(1, MAX_SCALE + 1), metavar=f"{{1..{MAX_SCALE}}}",
                   help="output this many times larger: background resized (bicubic), faces restored "
                   "from the original and pasted at the output resolution (default: 1)")
    r.add_argument("--color-correction", action="store_true", help="match the source face's colours")
    r.add_argument("--reference", help="the picture before a face swap (or a folder holding one of the same name "
                   "per input): only faces that differ from it are restored")
    r.add_argument("--reference-threshold", type=float, default=REFERENCE_THRESHOLD,
                   help=f"how much a face must differ from the reference to count as swapped (mean absolute "
                   f"difference over the face, 0..1; default {REFERENCE_THRESHOLD})")
    r.add_argument("--track-faces", action="store_true",
                   help="restore the inputs as the frames of one video (same size, in name order, all held in "
                   "memory): faces are tracked across them, so --select indices and largest pick the same person "
                   "in every frame, missed faces are interpolated and short false detections dropped")
    r.add_argument("--max-gap", type=int, default=3,
                   help="with --track-faces: frames a tracked face may be missing and still be restored there")
    r.add_argument("--min-track", type=int, default=2,
                   help="with --track-faces: tracks found in fewer frames are dropped as false detections")
    r.add_argument("--chunk-size", type=int, default=None, help="faces per network call")
    r.add_argument("--compile", action="store_true",
                   help="run the network through torch.compile (compiles for tens of seconds first; "
                   "measure with python -m bench network --compile before relying on it)")
    r.add_argument("--no-download", action="store_true", help="never download weights")
    r.set_defaults(func=cmd_restore)

    d = sub.add_parser("download", help="download GPEN weights (verified, resumable)",
                       description="Download released GPEN weights, verified (size and sha256 where published, "
                       "the released tensor layout) and resumable. GPEN_MIRROR=URL tries URL/<file> first.")
    d.add_argument("names", nargs="*", help="model names (GPEN-BFR-256, -512, -1024, -2048) or file names from "
                   "--list (e.g. gpen_bfr_512.onnx, detection_Resnet50_Final.pth)")
    d.add_argument("--onnx", action="store_true", help="the .onnx export of each named model (ReActor's, or "
                   "FaceFusion's for 256); with --all every known GPEN .onnx")
    d.add_argument("--all", action="store_true", help="every GPEN-BFR .pth (with --onnx: every GPEN .onnx)")
    d.add_argument("--list", action="store_true", help="print every known file: name, size, sha256, URLs")
    d.add_argument("--url", help="download any GPEN checkpoint from this URL (its GPEN layout is checked)")
    d.add_argument("--sha256", help="with --url: the file's expected sha256")
    d.add_argument("--name", help="with --url: the file name to save as (default: from the URL)")
    d.add_argument("--dir", help="destination folder (default: the file's models folder)")
    d.set_defaults(func=cmd_download)

    m = sub.add_parser("demo", help="restore the bundled sample photo (GPEN-BFR-512 by default)")
    m.add_argument("-o", "--output", default="output/demo", help="output folder (default: output/demo)")
    m.add_argument("--model", default="GPEN-BFR-512", choices=("GPEN-BFR-256", "GPEN-BFR-512", "GPEN-BFR-1024",
                   "GPEN-BFR-2048"), help="released model to use (found in or downloaded to the models folder)")
    m.add_argument("--device", default="auto")
    m.add_argument("--no-download", action="store_true", help="never download weights")
    m.set_defaults(func=cmd_demo)

    i = sub.add_parser("info", help="show the configuration inferred from a weights file")
    i.add_argument("model")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    if os.environ.get("GPEN_TUNE_MALLOC", "1") != "0":  # our own process: keep large blocks (gpen/runtime.py)
        tune_cpu_allocator()
    try:
        return args.func(args)
    except GPENError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
