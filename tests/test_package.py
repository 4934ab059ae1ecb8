"""``pip install .`` from a clone (issue 29): the core installs as the package ``gpen`` with a ``gpen``
command that works from any folder, without the ComfyUI adapters, tests or benchmarks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO

CLONE_PARTS = ("pyproject.toml", "README.md", "LICENSE", "__init__.py", "requirements.txt", "gpen", "nodes", "bench",
               "docs", "js")


def copy_clone(dest: Path) -> Path:
    """The files of a clone that matter to pip, plus the tests' Python files (no fixtures)."""
    dest.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results", "fixtures", "*.egg-info", "build")
    for part in CLONE_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / part)
    (dest / "tests").mkdir()
    for f in (REPO / "tests").glob("*.py"):
        shutil.copy2(f, dest / "tests" / f.name)
    return dest


@pytest.mark.skipif(sys.platform == "win32", reason="venv layout of POSIX systems")
def test_pip_install_gives_the_gpen_package_and_command(tmp_path):
    clone = copy_clone(tmp_path / "clone")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # torch, numpy, pip and setuptools come from this environment, not from a registry (offline, fast)
    (site / "zz_host_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GPEN_MODELS_DIR")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", str(clone)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = sorted(p.name for p in site.iterdir() if not p.name.endswith((".pth", ".dist-info")))
    assert "gpen" in installed and not {"nodes", "tests", "bench", "docs"} & set(installed), installed
    assert sorted(p.name for p in (site / "gpen" / "data").iterdir()) == sorted(
        p.name for p in (REPO / "gpen" / "data").glob("*.json"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([str(venv / "bin" / "gpen"), "--help"], capture_output=True, text=True, env=env,
                          cwd=elsewhere, timeout=300)
    assert proc.returncode == 0 and "restore" in proc.stdout and "download" in proc.stdout, proc.stderr
    code = ("import gpen, gpen.weights.paths as p; print(gpen.__file__); print(p.models_dir('facerestore_models'))")
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, cwd=elsewhere,
                          timeout=300)
    where, models = proc.stdout.split()
    assert Path(where).is_relative_to(site), where  # the installed copy, not the checkout
    assert Path(models) == tmp_path / "cache" / "gpen" / "models" / "facerestore_models"
