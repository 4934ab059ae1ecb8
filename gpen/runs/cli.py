"""Command line: ``python -m gpen restore|download|info`` (see ``--help``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path


from ..faces.detect import RETINAFACE_MODELS
from ..errors import GPENError, InvalidInputError
from ..faces.align import TEMPLATES
from ..faces.occlusion import OCCLUSION_CHOICES
from ..faces.parsing import DEFAULT_REGIONS, REGIONS
from ..faces.reference import REFERENCE_THRESHOLD
from ..faces.selection import SORT_ORDERS
from .jobs import RestoreOptions, load_landmarks, pick_device, pick_dtype
from ..pipeline.frames import MAX_SCALE
from ..runtime import tune_cpu_allocator
from .segments import DEFAULT_OVERLAP

log = logging.getLogger("gpen")


def _video_options(values: list[str]) -> dict[str, str]:
    opts = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--video-option takes KEY=VALUE (an FFmpeg encoder option), got {v!r}.")
        opts[key] = value
    return opts


def restore_options(args: argparse.Namespace) -> RestoreOptions:
    """The run's options from the parsed ``restore`` arguments (checked)."""
    from .video import VideoSettings

    video = VideoSettings(codec=args.video_codec, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt,
                          options=_video_options(args.video_option))
    return RestoreOptions(
        strength=args.strength, template=args.template, detector=args.detector, detection_threshold=args.threshold,
        face_selection=args.select, sort=args.sort, min_face_size=args.min_face_size, parsing=args.parsing,
        color_correction=args.color_correction, temporal_smoothing=args.temporal_smoothing,
        chunk_size=args.chunk_size, allow_download=not args.no_download, save_crops=args.save_crops,
        aligned=args.aligned, frames_per_segment=args.frames_per_segment, overlap=args.overlap, video=video,
        reference=args.reference, reference_threshold=args.reference_threshold, image_sequence=args.track_faces,
        max_gap=args.max_gap, min_track=args.min_track, regions=args.regions, occlusion=args.occlusion,
        upscale=args.upscale, temporal_consistency=args.temporal_consistency).check()


def cmd_restore(args: argparse.Namespace) -> int:
    from .runner import restore_files

    ray = None
    if args.ray is not None:
        from .distributed import RayConfig

        ray = RayConfig(address=args.ray or None, workers=args.workers, num_cpus=args.ray_cpus, retries=args.retries)
    report = restore_files(args.inputs, args.output, model=args.model, options=restore_options(args),
                           device=args.device, dtype=args.dtype, threads=args.threads, compile=args.compile,
                           landmarks=args.landmarks, overwrite=args.overwrite, ray=ray, quiet=args.quiet,
                           retries=args.retries)
    from .imageio import is_video

    videos = sum(1 for p in report.written if is_video(p))
    log.info("%d image(s), %d video(s) (%d frames), %d face(s) restored into %s; %d skipped (output exists)",
             len(report.written) - videos, videos, report.frames, report.faces, args.output, len(report.skipped))
    for name, why in report.failed.items():
        print_error(f"{name}: {why}")
    if report.failed and len(report.failed) + len(report.written) + len(report.skipped) > 1:
        print_error(f"{len(report.failed)} input(s) failed (named above); the others were restored or skipped.")
    return 2 if report.failed else 0


def print_error(message: str) -> None:
    """``error: <first line>`` on stderr, each further line of ``message`` indented below it."""
    lines = [" ".join(line.split()) for line in str(message).splitlines()]
    lines = [line for line in lines if line] or ["(no message)"]
    print(f"error: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(f"  {line}", file=sys.stderr)


ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEMO_IMAGE = ASSETS / "solvay_conference_1927.png"


def cmd_demo(args: argparse.Namespace) -> int:
    """Restore the bundled sample photo (29 faces, landmarks bundled so no detector is needed).

    Uses ``--model`` (GPEN-BFR-512 by default), found in or downloaded to the models folder. Where the
    weights cannot be had (no network), the same pipeline runs with seeded random weights of the real layout and
    the output is named ``*_pipeline-check.png``: a check that everything runs, not a restoration.
    """
    from ..errors import MissingWeightsError
    from .imageio import read_image, write_image
    from ..model.layouts import seeded_state_dict
    from ..model.loader import load_model
    from ..weights.models import resolve_model
    from ..pipeline.restorer import FaceRestorer

    if not DEMO_IMAGE.is_file():
        raise InvalidInputError(f"the demo photo ({DEMO_IMAGE.name}) ships with a clone of the repository, not with "
                                f"the installed package: run gpen demo in a clone, or gpen restore your own pictures.")
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
    """One ``--list`` line: name, size, sha256, URLs (those the size/sha256 do not describe are marked: checked
    against the sha256 their source's manifest gives at download time, or by layout alone)."""
    size = f"{spec.size:,} bytes" if spec.size is not None else "size not published"
    sha = spec.sha256 or "sha256 not published"
    from ..weights.registry import manifest_for

    def checked(u: str) -> str:
        if spec.hashed(u):
            return u
        return f"{u} (sha256 from the source's manifest)" if manifest_for(u) else f"{u} (layout-checked)"

    urls = " ".join(checked(u) for u in spec.urls)
    return f"{spec.name}  {size}  {sha}  {urls}"


def cmd_download(args: argparse.Namespace) -> int:
    from ..weights.models import download_file, download_url, files_for
    from ..weights.registry import REGISTRY, gpen_files

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
            print_error(str(e))
    return 2 if failed else 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..model.loader import load_model

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
    p = argparse.ArgumentParser(prog="gpen", description="GPEN blind face restoration (also: python -m gpen).")
    p.add_argument("-q", "--quiet", action="store_true", help="only print errors (also after the command)")
    sub = p.add_subparsers(dest="command", required=True)
    quiet = argparse.ArgumentParser(add_help=False)  # -q after the command too; SUPPRESS keeps one given before
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only print errors")

    r = sub.add_parser("restore", parents=[quiet], help="restore the faces in images and videos",
                       description="Restore the faces "
                       "in images and videos; writes one output per input into the output folder (images as "
                       "<stem>.png, videos in their container) and skips outputs that exist.")
    r.add_argument("inputs", nargs="+", help="image or video files, or folders of them")
    r.add_argument("--model", default="GPEN-BFR-512", help="weights file (.pth/.safetensors/.onnx) or a released "
                   "model name (found in, or downloaded to, the facerestore_models folder; default: GPEN-BFR-512)")
    r.add_argument("-o", "--output", required=True, help="output folder (not an input folder)")
    r.add_argument("--overwrite", action="store_true", help="redo inputs whose output exists (default: skip them)")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    r.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="network precision (auto: fp16 on GPUs; on the CPU bf16 where the processor has bf16 "
                        "matrix units (Intel AMX, AMD Zen 4/5), else fp32)")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: torch's)")
    r.add_argument("--strength", type=float, default=1.0, help="mix of restored (1) and original (0) face")
    r.add_argument("--template", default="gpen", choices=TEMPLATES, help="alignment template")
    r.add_argument("--landmarks", help="UTF-8 JSON file with 5-point landmarks per image or video frame "
                   "(skips detection)")
    r.add_argument("--aligned", action="store_true",
                   help="every image or frame already is an aligned face crop: restore it whole")
    r.add_argument("--save-crops", action="store_true",
                   help="also write each aligned input crop of images as <stem>_faceNN_crop.png")
    r.add_argument("--detector", default="retinaface_resnet50", choices=tuple(RETINAFACE_MODELS))
    r.add_argument("--threshold", type=float, default=0.5, help="detection score threshold")
    r.add_argument("--select", default="all", help="faces to restore: all, largest, or indices like 0,2 "
                   "(0 = the first in --sort order; negative ones count from the end)")
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
    r.add_argument("--temporal-smoothing", type=float, default=0.0,
                   help="video: smooth face landmarks over frames, 0..1 (default 0)")
    r.add_argument("--temporal-consistency", type=float, default=0.0,
                   help="video: hold restored faces still where the face holds still, 0..1 (blends each restored "
                   "face with the same face in the 2 frames either side where the input did not change; default 0, "
                   "off)")
    r.add_argument("--reference", help="the picture before a face swap (or a folder holding one of the same name "
                   "per input): only faces that differ from it are restored")
    r.add_argument("--reference-threshold", type=float, default=REFERENCE_THRESHOLD,
                   help=f"how much a face must differ from the reference to count as swapped (mean absolute "
                   f"difference over the face, 0..1; default {REFERENCE_THRESHOLD})")
    r.add_argument("--track-faces", action="store_true",
                   help="restore the images as the frames of one video (same size, in name order, in segments): "
                   "faces are tracked across them, so --select indices and largest pick the same person in every "
                   "frame, missed faces are interpolated and short false detections dropped (videos are tracked "
                   "anyway)")
    r.add_argument("--max-gap", type=int, default=3,
                   help="tracking: frames a tracked face may be missing and still be restored there")
    r.add_argument("--min-track", type=int, default=2,
                   help="tracking: tracks found in fewer frames are dropped as false detections")
    r.add_argument("--chunk-size", type=int, default=None, help="faces per network call")
    r.add_argument("--compile", action="store_true",
                   help="run the network through torch.compile (compiles for tens of seconds first; "
                   "measure with python -m bench network --compile before relying on it)")
    r.add_argument("--no-download", action="store_true", help="never download weights")
    v = r.add_argument_group("video")
    v.add_argument("--video-codec", default="libx264", help="FFmpeg encoder (default: libx264, H.264)")
    v.add_argument("--crf", type=float, default=18,
                   help="quality for libx264/libx265/VP9/AV1: lower is better (default: 18)")
    v.add_argument("--preset", default="medium", help="encoder speed preset of libx264/libx265 (default: medium)")
    v.add_argument("--pix-fmt", default="yuv420p", help="pixel format (default: yuv420p, what most players expect)")
    v.add_argument("--video-option", action="append", default=[], metavar="KEY=VALUE",
                   help="further encoder option, e.g. tune=film (repeatable)")
    v.add_argument("--frames-per-segment", type=int, default=None,
                   help="frames restored at once (default: from the frame size, 16 or more)")
    v.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                   help=f"context frames each side of a segment for smoothing and tracking "
                   f"(default: {DEFAULT_OVERLAP})")
    g = r.add_argument_group("distributed (Ray Data)")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster: ADDRESS (e.g. ray://head:10001 or auto), or none to start a "
                   "local one (RAY_ADDRESS is used when set); put it after the inputs, or write --ray=ADDRESS")
    g.add_argument("--workers", type=int, default=None,
                   help="Ray workers, each with one loaded model (default: one per GPU, else one per CPU)")
    g.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray cluster (default: all)")
    g.add_argument("--retries", type=int, default=2,
                   help="times an input whose restoring crashed (its Ray worker died, its decoder failed) is "
                   "tried again before it is named as failed, here or on Ray (default: 2)")
    r.set_defaults(func=cmd_restore)

    d = sub.add_parser("download", parents=[quiet], help="download GPEN weights (verified, resumable)",
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

    m = sub.add_parser("demo", parents=[quiet], help="restore the bundled sample photo (GPEN-BFR-512 by default)")
    m.add_argument("-o", "--output", default="output/demo", help="output folder (default: output/demo)")
    m.add_argument("--model", default="GPEN-BFR-512", choices=("GPEN-BFR-256", "GPEN-BFR-512", "GPEN-BFR-1024",
                   "GPEN-BFR-2048"), help="released model to use (found in or downloaded to the models folder)")
    m.add_argument("--device", default="auto")
    m.add_argument("--no-download", action="store_true", help="never download weights")
    m.set_defaults(func=cmd_demo)

    i = sub.add_parser("info", parents=[quiet], help="show the configuration inferred from a weights file")
    i.add_argument("model")
    i.set_defaults(func=cmd_info)
    return p


@contextlib.contextmanager
def cleanup_on_sigterm():
    """While the block runs (in the main thread), SIGTERM exits like Ctrl-C does, through every
    ``finally``: partial outputs are removed, a Ray cluster this run started is shut down. Python's
    default for SIGTERM ends the process at once, leaving hidden partial files behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, _frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    if os.environ.get("GPEN_TUNE_MALLOC", "1") != "0":  # our own process: keep large blocks (gpen/runtime.py)
        tune_cpu_allocator()
    try:
        with cleanup_on_sigterm():
            return args.func(args)
    except GPENError as e:
        print_error(str(e))
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
