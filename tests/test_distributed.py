"""The Ray Data runner on a small local cluster (2 CPUs, one for the whole module: Ray takes seconds
to start): the same files as the local run, bit for bit; failures retried and reported by name, a
worker process that dies too, in bounded time; workers find the helper networks' weights in the
driver's folders; reruns skip what exists; a clear error without Ray."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import gpen
from gpen.runs.cli import main
from gpen.errors import MissingDependencyError

from conftest import FIXTURES
from video_utils import encode_clip, moving_faces, write_video_landmarks

try:
    import ray
except ImportError:  # optional; CI installs it, so there a missing Ray fails instead of skipping
    ray = None

needs_ray = pytest.mark.skipif(ray is None and not os.environ.get("CI"),
                               reason='Ray is not installed (pip install "ray[data]")')
pytest.importorskip("av")

SMALL_256 = FIXTURES / "reference" / "fixture_s256.pth"


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module's tests; a run uses a cluster that is already running as
    it is (and does not shut it down), as on a real cluster."""
    if ray is None:
        pytest.skip('Ray is not installed (pip install "ray[data]")')
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"py_modules": [str(Path(gpen.__file__).parent)]})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # factories travel to the workers
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def within(seconds: int):
    """Fail (TimeoutError) instead of hanging when the block runs longer than ``seconds``."""
    def stop(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def make_folder(root: Path) -> tuple[Path, Path]:
    """A folder mixing two images and a clip with audio, and a landmarks file for all of them."""
    frames, lms = moving_faces(10)
    src = root / "in"
    src.mkdir()
    encode_clip(src / "clip.mp4", frames, fps=5, audio_seconds=2.0)
    cv2.imwrite(str(src / "a.png"), frames[2][:, :, ::-1])
    cv2.imwrite(str(src / "b.jpg"), frames[7][:, :, ::-1])
    lm = write_video_landmarks(root / "lm.json", {"clip.mp4": lms}, {"a.png": lms[2], "b.jpg": lms[7]})
    return src, lm


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_folder_through_ray_gives_the_local_run_files_bit_for_bit(cluster, tmp_path, caplog):
    src, lm = make_folder(tmp_path)
    common = [str(src), "--model", str(SMALL_256), "--landmarks", str(lm), "--frames-per-segment", "3",
              "--temporal-smoothing", "1"]
    # one torch thread in both, as each Ray CPU worker has: convolution sums depend on the thread count
    assert main(["-q", "restore", *common, "-o", str(tmp_path / "local"), "--threads", "1"]) == 0
    assert main(["-q", "restore", *common, "-o", str(tmp_path / "ray"), "--ray", "--ray-cpus", "2"]) == 0
    local, distributed = files_of(tmp_path / "local"), files_of(tmp_path / "ray")
    assert sorted(local) == ["a.png", "b.png", "clip.mp4"]
    assert distributed == local
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir()}
    caplog.set_level("INFO", logger="gpen")
    assert main(["restore", *common, "-o", str(tmp_path / "ray"), "--ray", "--ray-cpus", "2"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir()} == before  # all skipped
    assert "3 skipped" in caplog.text


def flaky_restorer(model: str, marks: str):
    """A real restorer that fails the first time it sees each image (across worker processes)."""
    from gpen.model.loader import load_model
    from gpen.pipeline.restorer import FaceRestorer

    restorer = FaceRestorer(load_model(model))
    restore = restorer.restore

    def first_time_fails(images, *args, **kwargs):
        if images.shape[0] == 1:
            mark = Path(marks) / hashlib.sha1(images.numpy().tobytes()).hexdigest()
            try:
                mark.open("x").close()
            except FileExistsError:
                pass
            else:
                raise RuntimeError("worker lost its GPU")  # a transient failure
        return restore(images, *args, **kwargs)

    restorer.restore = first_time_fails
    return restorer


def test_failed_inputs_are_retried_then_reported_by_name(cluster, tmp_path, caplog, capsys):
    from functools import partial

    from gpen.runs.distributed import RayConfig
    from gpen.runs.jobs import RestoreOptions
    from gpen.runs.runner import restore_files

    caplog.set_level("INFO", logger="gpen")
    src, lm = make_folder(tmp_path)
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    table = json.loads(lm.read_text())  # listed: no detector needed (a run that needs one finds it first)
    table["images"]["broken.png"] = {"faces": []}
    lm.write_text(json.dumps(table))
    marks = tmp_path / "marks"
    marks.mkdir()
    # the module's cluster, already running, is used as it is by both calls below
    report = restore_files([src], tmp_path / "out", model=str(SMALL_256), landmarks=lm,
                           options=RestoreOptions(frames_per_segment=4), ray=RayConfig(retries=1),
                           restorer_factory=partial(flaky_restorer, str(SMALL_256), str(marks)), quiet=True)
    assert list(report.failed) == ["broken.png"] and "not a readable image" in report.failed["broken.png"]
    assert len(list(marks.iterdir())) == 2  # both images failed once ...
    assert "retrying 2 failed input(s)" in caplog.text and "a.png" in caplog.text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "clip.mp4"]  # ... got done
    assert sorted(p.name for p in report.written) == [p.name for p in sorted((tmp_path / "out").iterdir())]
    # every unit of work timed where it ran, failed tries too: 3 images and 3 segments, then 2 retries
    names = sorted(t.name for t in report.timings)
    assert names == ["a.png", "a.png", "b.jpg", "b.jpg", "broken.png", "clip.mp4[0:4]", "clip.mp4[4:8]",
                     "clip.mp4[8:10]"]
    assert all(t.seconds > 0 and t.worker.split(":")[-1].isdigit() for t in report.timings)
    assert len({t.worker for t in report.timings}) <= 2 * 2  # two workers in each of the two rounds
    capsys.readouterr()
    rc = main(["-q", "restore", str(src), "--model", str(SMALL_256), "-o", str(tmp_path / "out"), "--landmarks",
               str(lm), "--ray"])
    assert ray.is_initialized()  # not shut down: it was not started by the run
    err = capsys.readouterr().err
    assert rc == 2 and "error: broken.png: InvalidInputError" in err and "error: 1 input(s) failed" in err


CRASH_MARK = (255, 0, 255)  # the top-left pixel of the picture whose restoring kills its worker


def crashing_restorer(model: str, tries: str):
    """A real restorer whose worker process dies (``os._exit``, as in an out-of-memory kill) whenever
    it gets the picture marked with :data:`CRASH_MARK`; each death leaves a file in ``tries``."""
    from gpen.model.loader import load_model
    from gpen.pipeline.restorer import FaceRestorer

    restorer = FaceRestorer(load_model(model))
    restore = restorer.restore

    def dies_on_the_marked_picture(images, *args, **kwargs):
        if images.shape[0] == 1 and bool((images[0, 0, 0, :3] * 255).round().eq(torch.tensor(CRASH_MARK)).all()):
            (Path(tries) / f"{os.getpid()}-{time.monotonic_ns()}").touch()
            os._exit(1)
        return restore(images, *args, **kwargs)

    restorer.restore = dies_on_the_marked_picture
    return restorer


@pytest.mark.parametrize("retries", [0, 1])
def test_a_worker_that_dies_costs_its_input_a_try_and_the_run_ends(cluster, tmp_path, capsys, retries):
    from functools import partial

    from gpen.runs.distributed import RayConfig
    from gpen.runs.jobs import RestoreOptions
    from gpen.runs.runner import restore_files

    src, lm = make_folder(tmp_path)
    crash = cv2.imread(str(src / "a.png"))
    crash[0, 0] = CRASH_MARK[::-1]  # BGR
    cv2.imwrite(str(src / "crash.png"), crash)
    marks = json.loads(lm.read_text())
    marks["images"]["crash.png"] = marks["images"]["a.png"]
    lm.write_text(json.dumps(marks))
    tries = tmp_path / "tries"
    tries.mkdir()
    with within(150):  # before: Ray restarted the worker and ran the task again, forever
        report = restore_files([src], tmp_path / "out", model=str(SMALL_256), landmarks=lm,
                               options=RestoreOptions(frames_per_segment=4), ray=RayConfig(retries=retries),
                               restorer_factory=partial(crashing_restorer, str(SMALL_256), str(tries)), quiet=True)
    assert len(list(tries.iterdir())) == retries + 1  # one death per try, none more
    assert list(report.failed) == ["crash.png"] and "worker process ended" in report.failed["crash.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "clip.mp4"]


def reporting_restorer(model: str, report: str):
    """A real restorer that writes, before each call, where its worker looks for the detector: the
    models folder it resolves and the file it finds in the folders the run hands it."""
    from gpen.model.loader import load_model
    from gpen.pipeline.restorer import FaceRestorer
    from gpen.weights.paths import find_weights, models_dir

    restorer = FaceRestorer(load_model(model))
    restore = restorer.restore

    def reports_its_folders(images, *args, **kwargs):
        found = find_weights(DETECTOR_FILE, "facedetection", kwargs.get("detector_dirs", ()))
        Path(report, f"{os.getpid()}-{time.monotonic_ns()}.json").write_text(json.dumps(
            {"models_dir": str(models_dir("facedetection")), "found": str(found)}))
        return restore(images, *args, **kwargs)

    restorer.restore = reports_its_folders
    return restorer


DETECTOR_FILE = "detection_mobilenet0.25_Final.pth"


def test_workers_in_detect_mode_use_the_drivers_model_folder(cluster, tmp_path, monkeypatch):
    from functools import partial

    from gpen.errors import MissingWeightsError
    from gpen.faces.detect import build_retinaface
    from gpen.runs.distributed import RayConfig
    from gpen.runs.jobs import RestoreOptions
    from gpen.runs.runner import restore_files

    src, _ = make_folder(tmp_path)
    (src / "clip.mp4").unlink()
    models = tmp_path / "models"
    (models / "facedetection").mkdir(parents=True)
    # the driver's folder (set after the cluster started: the workers do not inherit it)
    monkeypatch.setenv("GPEN_MODELS_DIR", str(models))
    options = RestoreOptions(detector="retinaface_mobile0.25", detection_threshold=1.0, allow_download=False)
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    run = partial(restore_files, [src], model=str(SMALL_256), options=options, ray=RayConfig(retries=0),
                  restorer_factory=partial(reporting_restorer, str(SMALL_256), str(report_dir)), quiet=True)
    # missing: one error before any work, naming the folder the user knows
    with pytest.raises(MissingWeightsError, match=str(models / "facedetection")):
        run(tmp_path / "none")
    assert not list(report_dir.iterdir())
    torch.manual_seed(0)  # seeded weights: the detector runs (threshold 1.0: it keeps no box)
    torch.save(build_retinaface("mobile0.25").state_dict(), models / "facedetection" / DETECTOR_FILE)
    report = run(tmp_path / "out")
    assert report.failed == {} and sorted(p.name for p in report.written) == ["a.png", "b.png"]
    seen = [json.loads(p.read_text()) for p in report_dir.iterdir()]
    assert len(seen) == 2 and all(r == {"models_dir": str(models / "facedetection"),
                                        "found": str(models / "facedetection" / DETECTOR_FILE)} for r in seen), seen


def test_ray_missing_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    from gpen.runs.distributed import require_ray

    with pytest.raises(MissingDependencyError, match=r'pip install "ray\[data\]"'):
        require_ray()
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    rc = main(["-q", "restore", str(tmp_path / "a.png"), "--model", str(SMALL_256), "-o", str(tmp_path / "out"),
               "--ray"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and 'pip install "ray[data]"' in err
