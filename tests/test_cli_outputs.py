"""What the command line writes: the restored pixels, not only that files exist (issue 19)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import torch

import gpen
from gpen.runs.cli import main

from conftest import FIXTURES, astronaut, landmarks_of

MODEL_512 = FIXTURES / "reference" / "fixture_s512.pth"  # a narrow 512 px network: fast on CPU


def test_restore_writes_what_the_library_computes(tmp_path):
    """The written file is the library's restoration of that image (to 8-bit rounding): restored
    inside the face, untouched outside it; the --save-crops files are the aligned input crops."""
    rgb = (astronaut()[0].numpy() * 255).round().astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), rgb[:, :, ::-1])
    lm = landmarks_of("skimage.data.astronaut")
    (tmp_path / "lm.json").write_text(json.dumps({"images": {"a.png": {"faces": [{"landmarks5": lm[0].tolist()}]}}}))
    assert main(["-q", "restore", str(tmp_path / "a.png"), "--model", str(MODEL_512), "-o", str(tmp_path / "out"),
                 "--landmarks", str(tmp_path / "lm.json"), "--strength", "0.7", "--save-crops"]) == 0
    written = cv2.imread(str(tmp_path / "out" / "a.png"))[:, :, ::-1].astype(np.int16)

    net = gpen.load_model(MODEL_512)
    image = torch.from_numpy(rgb.astype(np.float32) / 255.0)[None]
    res = gpen.FaceRestorer(net).restore(image, [lm], strength=0.7, keep_crops="aligned")
    expected = np.round(res.images[0].numpy() * 255.0).astype(np.int16)
    assert np.abs(written - expected).max() <= 1  # float rounding on either side of a .5
    inside, outside = res.masks[0].numpy() > 0.99, res.masks[0].numpy() == 0
    assert np.abs(written[inside] - rgb[inside]).mean() > 10  # the face was restored (a visible change)
    assert np.array_equal(written[outside], rgb[outside])  # and nothing else was touched
    crop = cv2.imread(str(tmp_path / "out" / "a_face00_crop.png"))[:, :, ::-1].astype(np.int16)
    assert np.abs(crop - np.round(res.crops[0].numpy() * 255).astype(np.int16)).max() <= 1
