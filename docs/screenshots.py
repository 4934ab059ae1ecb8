"""Refresh the screenshots in docs/ (shown by the README) and the template thumbnails: ``python docs/screenshots.py``.

They are a by-product of the browser test (tests/test_browser.py): it loads every example workflow
and runs two of them in the real frontend of the newest supported ComfyUI in headless Chromium,
and with ``GPEN_UPDATE_SCREENSHOTS=1`` it keeps what it photographed:

- ``docs/screenshot_workflow.png``: the single-image example workflow as a user sees it;
- ``docs/screenshot_compare.png``: the restore node after a run, with its before/after view;
- ``docs/screenshot_node_folded.png``: the restore node in the Nodes 2.0 view, advanced inputs folded;
- ``example_workflows/<name>.jpg``: each template's thumbnail for the template browser.

No real GPEN weights exist on the build machine: the run uses a *seeded random* GPEN-BFR-256
checkpoint, so the "after" side shows what random weights produce, not restoration quality.
Needs the shared ComfyUI archives (see tests/host_utils.py) and ``chromium``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    sys.path.insert(0, str(REPO / "tests"))
    import host_utils as H

    env = {**os.environ, "GPEN_UPDATE_SCREENSHOTS": "1", H.ENV_VERSIONS: H.HOST_VERSIONS[-1], H.ENV_REQUIRE: "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "tests/test_browser.py", "-p", "no:cacheprovider"]
    return subprocess.call(cmd, cwd=REPO, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
