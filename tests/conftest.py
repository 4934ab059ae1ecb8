"""Shared test helpers: where the reference data lives, and small loaders for it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = Path(os.environ.get("GPEN_SHARED_DIR", REPO.parent / "shared"))
SHARED_REFERENCE = SHARED / "gpen_reference"
# dtype "auto" stays float32 on the CPU in the tests (and in the processes they start: CLI runs, Ray
# workers), so that outputs compared with float32 references do not depend on the test machine's
# processor; tests/test_precision.py lifts it to test the rule itself (gpen/model/precision.py).
os.environ.setdefault("GPEN_AUTO_NO_CPU_BF16", "1")


def shared_available() -> bool:
    return SHARED_REFERENCE.is_dir()


needs_shared = pytest.mark.skipif(not shared_available(), reason=f"shared reference data not found at {SHARED}")


def reference_fixture_dirs() -> dict[str, Path]:
    """Every official-output fixture tag -> folder holding it (shared folder wins when present)."""
    found = {}
    for folder in (FIXTURES / "reference", SHARED_REFERENCE):
        for f in sorted(folder.glob("fixture_*.json")) if folder.is_dir() else []:
            found[f.stem.removeprefix("fixture_")] = folder
    return found


def load_reference_fixture(tag: str) -> dict:
    """Config, checkpoint path, input batch (-1..1) and official subsampled output of a fixture."""
    import cv2

    folder = reference_fixture_dirs()[tag]
    meta = json.loads((folder / f"fixture_{tag}.json").read_text())
    inputs = []
    for b in range(meta["batch"]):
        bgr = cv2.imread(str(folder / f"fixture_{tag}_input{b}.png"), cv2.IMREAD_COLOR)
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        inputs.append((torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5)
    return {
        "meta": meta,
        "checkpoint": folder / f"fixture_{tag}.pth",
        "input": torch.stack(inputs),
        "expected": torch.from_numpy(np.load(folder / f"fixture_{tag}_expected_sub.npy")),
    }


def psnr(a, b, peak: float = 1.0) -> float:
    """PSNR in dB of two arrays or CPU tensors (computed in float64)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak ** 2 / mse)


SOLVAY = REPO / "assets" / "solvay_conference_1927.png"  # ships with the pack (same bytes as the shared copy)
SHARED_SOLVAY = SHARED / "test_images" / "solvay_conference_1927.png"
LANDMARKS_FIXTURE = FIXTURES / "geometry" / "landmarks.json"


def landmarks_of(image: str, dtype=np.float32) -> np.ndarray:
    """(K, 5, 2) MTCNN landmarks of 'solvay_conference_1927.png' or 'skimage.data.astronaut'."""
    faces = json.loads(LANDMARKS_FIXTURE.read_text())["images"][image]["faces"]
    return np.asarray([f["landmarks5"] for f in faces], dtype=dtype)


def astronaut() -> torch.Tensor:
    """skimage's astronaut as (1, 512, 512, 3) float32 0..1."""
    from skimage import data

    return torch.from_numpy(data.astronaut().astype(np.float32) / 255.0)[None]


def solvay() -> torch.Tensor:
    """The shared group photo as (1, H, W, 3) float32 0..1 (RGB)."""
    import cv2

    bgr = cv2.imread(str(SOLVAY), cv2.IMREAD_COLOR)
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1]).astype(np.float32) / 255.0)[None]


needs_solvay = pytest.mark.skipif(not SOLVAY.is_file(), reason=f"{SOLVAY} not found (the clone lacks assets/)")


# ---- real ComfyUI hosts (see tests/host_utils.py) ------------------------------------------------

def host_or_skip(version: str):
    """The installed host ``version``; skipped when it cannot be had here, failed under
    ``$GPEN_REQUIRE_HOST=1`` (CI), where every host must run."""
    import host_utils as H

    try:
        return H.install_host(version)
    except H.HostUnavailable as exc:
        if H.host_required():
            pytest.fail(f"{exc}\n(${H.ENV_REQUIRE}=1: the host tests must run here)", pytrace=False)
        pytest.skip(str(exc))


def _host_ids(version: str) -> str:
    return f"comfyui-{version}"


def _versions() -> list[str]:
    import host_utils as H

    return H.host_versions()


@pytest.fixture
def no_restore(monkeypatch):
    """Records every call of FaceRestorer.restore (none must happen when an argument is refused)."""
    from gpen import FaceRestorer

    calls = []
    original = FaceRestorer.restore

    def spy(self, *a, **k):
        calls.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(FaceRestorer, "restore", spy)
    return calls


@pytest.fixture(scope="session", params=_versions(), ids=_host_ids)
def comfy_server(request, tmp_path_factory):
    """One headless ComfyUI server per host version for the whole session (tests that use it are
    grouped by version, so one server runs at a time), with this pack and the test-only packs
    (``host_utils.TEST_NODE_PACKS``) installed and the seeded models and inputs of ``host_utils.prepare_base``."""
    import host_utils as H
    from gpen.model.network import DERIVED_CACHE

    host = host_or_skip(request.param)
    base = H.make_base_dir(tmp_path_factory.mktemp("comfy_" + request.param.replace(".", "_")), extra_nodes=H.TEST_NODE_PACKS)
    H.prepare_base(base)
    # GPEN_OFFLINE: never try to download detector weights during the test.
    server = H.ComfyServer(host, base, env={"GPEN_OFFLINE": "1", "GPEN_TEST_DERIVED_CACHE": DERIVED_CACHE}).start()
    server.object_info = server.get("/object_info")
    yield server
    server.stop()
