"""The pack as the Comfy Registry and ComfyUI-Manager take it: ``pyproject.toml`` against the
registry's specification (https://docs.comfy.org/registry/specifications), the registry's own
``comfy node validate``, and the archive ``comfy node pack`` builds (``.comfyignore``).

comfy-cli is installed on first use into ``.cache/comfy-cli`` (tests/host_utils.py); without a
package registry those two tests are skipped, failed under ``$GPEN_REQUIRE_HOST=1`` (CI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import host_utils as H

REPO = H.REPO
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
COMFY_VERSION_SPEC = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<)\s*)?\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?$")


def test_node_id_follows_the_registry_rules():
    name = PYPROJECT["project"]["name"]
    assert len(name) < 100
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*", name), name  # no leading/double specials
    assert "comfyui" not in name.lower()  # the specification's advice, followed


def test_version_license_and_urls():
    project = PYPROJECT["project"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])  # semantic version X.Y.Z
    assert project["license"] == {"file": "LICENSE"} and (REPO / "LICENSE").is_file()
    repository = project["urls"]["Repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repository)
    assert project["description"]
    # the pack's runtime requirements, as ComfyUI-Manager installs them from requirements.txt
    wanted = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert project["dependencies"] == [w for w in wanted if w]
    assert not any(d.lower().startswith(("torch", "torchvision")) for d in project["dependencies"])


def test_tool_comfy_section():
    comfy = PYPROJECT["tool"]["comfy"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"])
    assert comfy["DisplayName"]
    spec = comfy["requires-comfyui"]
    assert all(COMFY_VERSION_SPEC.match(part.strip()) for part in spec.split(","))
    assert spec == f">={H.HOST_VERSIONS[0]}"  # the oldest host the tests run in
    # The icon: a square of at most 400 px, committed here and served from the repository.
    repository = PYPROJECT["project"]["urls"]["Repository"]
    owner_repo = repository.removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{owner_repo}/main/"
    assert comfy["Icon"].startswith(prefix)
    icon = REPO / comfy["Icon"].removeprefix(prefix)
    assert icon.is_file() and icon.suffix in (".png", ".jpg", ".svg", ".gif")
    with Image.open(icon) as img:
        assert img.width == img.height <= 400


def _comfy_cli() -> Path:
    try:
        return H.install_comfy_cli()
    except H.HostUnavailable as exc:
        if H.host_required():
            pytest.fail(f"{exc}\n(${H.ENV_REQUIRE}=1: comfy-cli must run here)", pytrace=False)
        pytest.skip(str(exc))


def _run_comfy(exe: Path, args: list[str], cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path / "home"),
           "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(exe), "--skip-prompt", "--no-enable-telemetry", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_comfy_node_validate_passes(tmp_path):
    exe = _comfy_cli()
    proc = _run_comfy(exe, ["node", "validate"], REPO, tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "All validation checks passed" in out, out
    assert "Warning" not in out and "Security warnings" not in out, out  # comfy-cli only warns on bad fields


def _working_tree_copy(dest: Path) -> Path:
    """The files git would publish from this checkout (tracked and new, not ignored), in a fresh repo."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    return dest


def test_published_archive_leaves_out_tests_fixtures_and_bench_results(tmp_path):
    exe = _comfy_cli()
    tree = _working_tree_copy(tmp_path / "pack")
    proc = _run_comfy(exe, ["node", "pack"], tree, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (archive,) = tree.glob("*.zip")
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
    leaked = sorted(n for n in names if n.startswith(("tests/", "bench/results/", ".ci/")) or n == "setup.sh")
    assert not leaked, leaked
    assert not any("fixtures" in n for n in names)
    needed = {"__init__.py", "pyproject.toml", "requirements.txt", "LICENSE", "README.md", "js/gpen_compare.js",
              "nodes/face_restore.py", "nodes/model_loader.py", "gpen/__init__.py", "assets/icon.png",
              "docs/screenshot_workflow.png", "docs/screenshot_compare.png"}
    assert needed <= names, sorted(needed - names)
    templates = {p.relative_to(REPO).as_posix() for p in (REPO / "example_workflows").iterdir()}
    assert templates <= names, sorted(templates - names)
    assert {n for n in names if n.startswith("gpen/")} >= {p.relative_to(REPO).as_posix()
                                                            for p in (REPO / "gpen").rglob("*.py")}
