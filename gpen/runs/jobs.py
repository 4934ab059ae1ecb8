"""A restore run over files: the options, the inputs and their output names, and one input at a time.

Used by the command line's local run and by the Ray runner (:mod:`gpen.runs.distributed`), so both
name, skip and produce outputs the same way:

- every input gets one output in the output folder: images ``<stem>.png`` (16-bit where the
  input is), videos ``<stem>`` with the input's container (mp4/m4v/mov/mkv; others become mkv);
  inputs whose outputs would collide (``a.jpg`` and ``a.png``) get ``<stem>_<ext>`` instead;
- an output folder that is an input folder, or an output that would replace an input, is refused;
- an output that exists is skipped (a rerun resumes an interrupted run); outputs are written
  under temporary names and renamed when complete, so an existing output is a finished one.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInputError
from ..model.checkpoint import resolve_device, resolve_dtype
from ..faces.occlusion import parse_occluders
from ..faces.parsing import parse_regions
from ..faces.reference import REFERENCE_THRESHOLD
from ..pipeline.frames import MAX_SCALE
from .imageio import encode_image, is_video, read_image, to_uint8
from ..model.precision import auto_dtype_name
from ..pipeline.consistency import RADIUS
from ..pipeline.options import check_options
from .segments import (DEFAULT_OVERLAP, Segment, default_frames_per_segment, plan_segments, restore_segment,
                       window_landmarks)
from .video import VideoSettings, output_suffix

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA, else MPS, else CPU; any other name as given, when this machine has it
    (else ``InvalidInputError`` saying what to use)."""
    if name != "auto":
        return resolve_device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> str:
    """``auto``: :func:`gpen.model.precision.auto_dtype` (fp16 on GPUs, bf16 on CPUs with native
    bf16 matrix units, fp32 elsewhere); any other name as given."""
    if name != "auto":
        resolve_dtype(name)
        return name
    return auto_dtype_name(device)


@dataclass(frozen=True)
class ModelSpec:
    """Which network a run loads, where and how: a weights file, device and dtype names, torch
    threads (None: torch's default) and ``torch.compile``."""

    path: str
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None
    compile: bool = False

    def build(self):
        """A :class:`gpen.pipeline.restorer.FaceRestorer` holding the loaded network."""
        from ..model.loader import load_model
        from ..pipeline.restorer import FaceRestorer

        if self.threads:
            torch.set_num_threads(int(self.threads))
        device = pick_device(self.device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: autotuned convolutions pay back at once
        net = load_model(self.path, device=device, dtype=pick_dtype(self.dtype, device))
        if self.compile:
            from ..model.network import GPEN

            if not isinstance(net, GPEN):
                raise InvalidInputError(f"--compile needs a PyTorch GPEN network; {self.path} runs in onnxruntime.")
            net.compile()
        return FaceRestorer(net)


@dataclass(frozen=True)
class RestoreOptions:
    """Every option of a restore run besides the model (see ``python -m gpen restore --help``).

    ``restore`` holds extra keyword arguments of :meth:`gpen.pipeline.restorer.FaceRestorer.restore`
    (for options this class does not name). ``frames_per_segment`` and ``overlap`` shape video
    segments (see :mod:`gpen.runs.segments`). ``reference``: the picture (or clip) before a face swap,
    or a folder holding one of the same name per input. ``image_sequence``: the images are the
    frames of one video (restored in segments, faces tracked across them).
    """

    strength: float = 1.0
    template: str = "gpen"
    detector: str = "retinaface_resnet50"
    detection_threshold: float = 0.5
    face_selection: str = "all"
    sort: str = "left-to-right"
    min_face_size: float = 0.0
    parsing: bool = False
    color_correction: bool = False
    temporal_smoothing: float = 0.0
    chunk_size: int | None = None
    allow_download: bool = True
    save_crops: bool = False
    aligned: bool = False
    frames_per_segment: int | None = None
    overlap: int = DEFAULT_OVERLAP
    video: VideoSettings = field(default_factory=VideoSettings)
    reference: str | None = None
    reference_threshold: float = REFERENCE_THRESHOLD
    image_sequence: bool = False
    track_faces: bool | None = None
    max_gap: int = 3
    min_track: int = 2
    regions: str | None = None
    occlusion: str | None = None
    upscale: int = 1
    temporal_consistency: float = 0.0
    restore: dict = field(default_factory=dict)

    def check(self) -> RestoreOptions:
        """Raise InvalidInputError for a bad option before any file is read or model loaded."""
        check_options(template=self.template, strength=self.strength, face_selection=self.face_selection,
                      sort=self.sort, detection_threshold=self.detection_threshold, min_face_size=self.min_face_size,
                      temporal_smoothing=self.temporal_smoothing, reference_threshold=self.reference_threshold,
                      track_faces=self.track_faces, max_gap=self.max_gap, min_track=self.min_track,
                      temporal_consistency=self.temporal_consistency)
        if self.temporal_consistency and self.aligned:
            raise InvalidInputError("--temporal-consistency follows faces along their tracks; --aligned frames have "
                                    "none: leave one of the two out.")
        if self.regions is not None:
            if not self.parsing:
                raise InvalidInputError("--regions chooses face-parsing classes: add --parsing.")
            parse_regions(self.regions)
        parse_occluders(self.occlusion)
        if not 1 <= int(self.upscale) <= MAX_SCALE:
            raise InvalidInputError(f"upscale must be 1..{MAX_SCALE}, got {self.upscale}.")
        if self.reference is not None and not Path(self.reference).exists():
            raise InvalidInputError(f"--reference {self.reference}: no such file or folder.")
        if self.frames_per_segment is not None and self.frames_per_segment < 1:
            raise InvalidInputError(f"frames per segment must be >= 1, got {self.frames_per_segment}.")
        if self.overlap < 0:
            raise InvalidInputError(f"overlap must be >= 0 frames, got {self.overlap}.")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise InvalidInputError(f"chunk size (faces per network call) must be >= 1, got {self.chunk_size}; "
                                    f"leave it out to have it chosen from the device's memory.")
        return self

    def restore_kwargs(self) -> dict:
        """Keyword arguments of FaceRestorer.restore for these options (beside landmarks and progress)."""
        return dict(template=self.template, detector=self.detector, detection_threshold=self.detection_threshold,
                    face_selection=self.face_selection, sort=self.sort, min_face_size=self.min_face_size,
                    parsing=self.parsing, color_correction=self.color_correction,
                    temporal_smoothing=self.temporal_smoothing, allow_download=self.allow_download,
                    reference_threshold=self.reference_threshold,
                    track_faces=True if self.image_sequence else self.track_faces, max_gap=self.max_gap,
                    min_track=self.min_track, regions=self.regions, occlusion=self.occlusion, upscale=self.upscale,
                    temporal_consistency=self.temporal_consistency, **self.restore)

    def context_frames(self) -> int:
        """Context frames each side of a segment (enough to bridge a tracking gap of ``max_gap``
        frames, and with ``temporal_consistency`` the filter's reach plus the landmark smoothing's);
        none in aligned mode, where frames are independent."""
        reach = RADIUS + 2 if self.temporal_consistency else 0
        return 0 if self.aligned else max(self.overlap, self.max_gap + 1, reach)

    def segments(self, frames: int, height: int, width: int) -> list[Segment]:
        """The segments of a clip of ``frames`` frames of ``height`` x ``width`` (as read): by default as
        many frames as bounded memory holds at the output size (:func:`default_frames_per_segment`)."""
        length = self.frames_per_segment or default_frames_per_segment(height, width, self.upscale,
                                                                        self.context_frames())
        return plan_segments(frames, length, self.context_frames())


# ---- inputs and outputs ----------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One input file, its kind (``image`` / ``video``) and its output file."""

    source: Path
    kind: str
    output: Path

    @property
    def name(self) -> str:
        return self.source.name

    def crop_path(self, k: int) -> Path:
        """Where the aligned input crop of face ``k`` goes (``--save-crops``)."""
        return self.output.with_name(f"{self.output.stem}_face{k:02d}_crop.png")


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def plan_outputs(files: list[Path], out_dir: str | os.PathLike, inputs: list[str | os.PathLike] = ()) -> list[Item]:
    """One :class:`Item` per input file, with the output names described in the module docstring.

    ``inputs`` are the files and folders as given (to refuse an output folder that is one of them).
    """
    out_dir = Path(out_dir)
    for given in inputs:
        if Path(given).is_dir() and _same_path(Path(given), out_dir):
            raise InvalidInputError(f"the output folder {out_dir} is an input folder: restored files would "
                                    f"overwrite or mix with the originals; choose another -o folder.")
    unique: dict[Path, Path] = {}
    for f in files:  # a file given twice (itself and through its folder) is restored once
        unique.setdefault(f.resolve(), f)
    files = list(unique.values())
    suffix_of = {f: (output_suffix(f) if is_video(f) else ".png") for f in files}
    plain = {f: f"{f.stem}{suffix_of[f]}" for f in files}
    counts: dict[str, int] = {}
    for name in plain.values():
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    names = {f: plain[f] if counts[plain[f].lower()] == 1 else f"{f.stem}_{f.suffix.lstrip('.').lower()}{suffix_of[f]}"
             for f in files}
    seen: dict[str, Path] = {}
    items = []
    inodes: set | None = None  # (device, inode) of every input, read once where an output exists already
    for f in files:
        key = names[f].lower()
        if key in seen:
            raise InvalidInputError(f"{seen[key]} and {f} would both be written as {out_dir / names[f]}; "
                                    f"restore them into separate -o folders.")
        seen[key] = f
        output = out_dir / names[f]
        clash = output.resolve() in unique
        if not clash and output.exists():  # the same file under another name (hard link, case-blind disk)?
            if inodes is None:
                inodes = {(st.st_dev, st.st_ino) for st in (g.stat() for g in files)}
            st = output.stat()
            clash = (st.st_dev, st.st_ino) in inodes
        if clash:
            raise InvalidInputError(f"{output} would overwrite the input of that name; choose another -o folder.")
        items.append(Item(f, "video" if is_video(f) else "image", output))
    return items


@dataclass(frozen=True)
class TaskTiming:
    """When and where one unit of work ran: ``name`` (an image, or ``clip.mp4[0:64]`` for a video
    segment), ``worker`` (``host:pid``), ``started`` (seconds since the epoch) and ``seconds`` it took
    (reading, restoring and encoding; not writing on the driver)."""

    name: str
    worker: str
    started: float
    seconds: float


def worker_name() -> str:
    """``host:pid`` of this process, as :class:`TaskTiming` names workers."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class RunReport:
    """What a run did: outputs written, inputs skipped (their output existed), failures by input name,
    and how long each unit of work took where (``timings``)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    faces: int = 0
    frames: int = 0
    timings: list[TaskTiming] = field(default_factory=list)


def pending(items: list[Item], overwrite: bool = False) -> tuple[list[Item], list[Item]]:
    """(items to do, items whose output exists and that are skipped unless ``overwrite``)."""
    if overwrite:
        return list(items), []
    todo = [it for it in items if not it.output.exists()]
    done = [it for it in items if it.output.exists()]
    return todo, done


def reference_for(item: Item, reference: str | os.PathLike | None) -> Path | None:
    """The reference of input ``item``: ``reference`` itself (a file), or the file of the same name
    in the ``reference`` folder."""
    if reference is None:
        return None
    reference = Path(reference)
    ref = reference / item.name if reference.is_dir() else reference
    if not ref.is_file():
        raise InvalidInputError(f"no reference picture for {item.name}: {ref} does not exist (--reference takes "
                                f"the picture before the swap, or a folder holding one of the same name per input).")
    return ref


# ---- landmarks files ----------------------------------------------------------------------------

LANDMARKS_FORMAT = ('{"images": {"name.png": {"faces": [{"landmarks5": [[x, y] x5]}]}}, '
                    '"videos": {"clip.mp4": {"frames": [{"faces": [...]}, ...]}}}')


def _faces(entry) -> np.ndarray:
    return np.asarray([f["landmarks5"] for f in entry["faces"]], dtype=np.float32).reshape(-1, 5, 2)


def read_landmarks_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, list[np.ndarray]]]:
    """(image name -> (K, 5, 2), video name -> per frame (K, 5, 2)) from a UTF-8 JSON landmarks file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        images = {name: _faces(entry) for name, entry in data.get("images", {}).items()}
        videos = {name: [_faces(fr) for fr in entry["frames"]] for name, entry in data.get("videos", {}).items()}
        if not images and not videos:
            raise KeyError("images")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InvalidInputError(f"{path}: not a landmarks file of the form {LANDMARKS_FORMAT} ({e}).") from None
    return images, videos


def load_landmarks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """File name -> (K, 5, 2) from JSON ``{"images": {name: {"faces": [{"landmarks5": ...}]}}}``."""
    return read_landmarks_file(path)[0]


def lookup_landmarks(table: dict | None, item: Item):
    """The landmarks of ``item`` in a table from :func:`read_landmarks_file`, or None to detect."""
    if table is None:
        return None
    if item.name in table:
        return table[item.name]
    log.warning("%s is not in the landmarks file: detecting its faces", item.name)
    return None


# ---- one input ---------------------------------------------------------------------------------


@dataclass
class ImageOutput:
    """What restoring one image produced: file name -> bytes (crops first, the image last), faces, summary."""

    files: list[tuple[str, bytes]]
    faces: int
    info: str


def restore_image(restorer, item: Item, options: RestoreOptions, landmarks: np.ndarray | None = None,
                  progress=None) -> ImageOutput:
    """Restore one image file into encoded output files (not written yet); ``progress(done, total)``
    as :meth:`gpen.pipeline.restorer.FaceRestorer.restore` reports it."""
    image, bits = read_image(item.source)
    if options.aligned:
        result = restorer.restore_aligned(image[None], strength=options.strength, chunk_size=options.chunk_size,
                                          upscale=options.upscale, keep_crops="none", progress=progress)
        return ImageOutput([(item.output.name, encode_image(result.images[0], bits))], 1, result.info)
    ref = reference_for(item, options.reference)
    result = restorer.restore(image[None], None if landmarks is None else [landmarks], strength=options.strength,
                              chunk_size=options.chunk_size, keep_crops="aligned" if options.save_crops else "none",
                              reference=None if ref is None else read_image(ref)[0][None], progress=progress,
                              **options.restore_kwargs())
    files = [(item.crop_path(k).name, encode_image(result.crops[k])) for k in range(result.crops.shape[0])]
    files.append((item.output.name, encode_image(result.images[0], bits)))
    return ImageOutput(files, len(result.faces), result.info)


def video_reference(item: Item, options: RestoreOptions, info=None):
    """The reference of a video input: None, a :class:`gpen.runs.video.VideoInfo` (a clip, read frame by
    frame alongside) or a picture (1, H, W, C) for every frame. Given the clip's ``info``, a reference
    of another frame size, or a clip with fewer frames, is refused here, before any frame is restored."""
    ref = reference_for(item, options.reference)
    if ref is None:
        return None
    if is_video(ref):
        from .video import probe

        reference = probe(ref)
        size, frames = reference.upright_size, reference.frames
    else:
        reference = read_image(ref)[0][None]
        size, frames = tuple(reference.shape[1:3]), None
    if info is not None:
        h, w = info.upright_size
        if tuple(size) != (h, w):
            raise InvalidInputError(f"--reference {ref} is {size[1]}x{size[0]}, {item.name} is {w}x{h}: the "
                                    f"reference is the clip before the face swap, of the same size.")
        if frames is not None and frames < info.frames:
            raise InvalidInputError(f"--reference {ref} has {frames} frames, {item.name} has {info.frames}: the "
                                    f"reference clip must hold every frame of the clip (the clip before the swap).")
    return reference


def restore_window(restorer, frames: np.ndarray, segment: Segment, landmarks: list | None, options: RestoreOptions,
                   reference: np.ndarray | torch.Tensor | None = None, progress=None) -> tuple[np.ndarray, int]:
    """Restore one video segment from the uint8 frames it reads (and the reference clip's frames, or a
    reference picture); returns (restored uint8 frames, faces restored)."""
    images = torch.from_numpy(frames).float().div_(255.0)  # one float copy of the window
    if isinstance(reference, np.ndarray):
        reference = torch.from_numpy(reference).float() / 255.0
    out, result, _ = restore_segment(restorer, images, segment, window_landmarks(landmarks, segment, frames.shape[0]),
                                     aligned=options.aligned, strength=options.strength,
                                     chunk_size=options.chunk_size, reference=reference,
                                     restore_kwargs=options.restore_kwargs(), progress=progress)
    return to_uint8(out), (out.shape[0] if options.aligned else len(result.faces))


def restore_sequence_segment(restorer, items: list[Item], segment: Segment, options: RestoreOptions,
                             landmarks: dict | None) -> ImageOutput:
    """Restore the images ``segment`` covers of an image sequence (``items``, the frames of one video)."""
    window = items[segment.context_start:segment.context_stop]
    read = [read_image(it.source) for it in window]
    if len({tuple(img.shape) for img, _ in read}) > 1:
        raise InvalidInputError("--track-faces restores the images as the frames of one video: they must all "
                                "have the same size and channels.")
    images = torch.stack([img for img, _ in read])
    lms = None
    if landmarks is not None:
        lms = [landmarks.get(it.name, np.zeros((0, 5, 2), np.float32)) for it in window]
    refs = [reference_for(it, options.reference) for it in window]
    ref = None if options.reference is None else torch.stack([read_image(r)[0] for r in refs])
    out, result, counts = restore_segment(restorer, images, segment, lms, aligned=options.aligned,
                                          strength=options.strength, chunk_size=options.chunk_size, reference=ref,
                                          keep_crops="aligned" if options.save_crops else "none",
                                          restore_kwargs=options.restore_kwargs())
    a, _ = segment.core
    files, crop = [], 0
    for k in range(out.shape[0]):
        item, bits = window[a + k], read[a + k][1]
        for j in range(counts[k] if options.save_crops and not options.aligned else 0):
            files.append((item.crop_path(j).name, encode_image(result.crops[crop + j])))
        crop += counts[k]
        files.append((item.output.name, encode_image(out[k], bits)))
    return ImageOutput(files, sum(counts), result.info)
