#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs the main job on the bundled sample:
#   1. a virtual environment in .venv with torch, the pack's requirements and the test extras;
#   2. `python -m gpen demo`: restores assets/solvay_conference_1927.png (29 faces) into output/demo/.
# Inside ComfyUI you do not need this script: see README.md ("Install into ComfyUI").
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is the host's business (ComfyUI ships it); standalone we install the build this project tests.
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -r requirements-test.txt
# Test-only: MTCNN with its bundled weights, for detection tests on real photos (its torch pin is stale).
.venv/bin/python -m pip install -q --no-deps facenet-pytorch==2.6.0
.venv/bin/python -m gpen demo -o output/demo
