"""scripts/_env.sh installs the project without setuptools' "Editable installation" banner: the filter it
passes to pip is checked on setuptools' real editable build of this project (offline, in a copy)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = "from setuptools import build_meta; build_meta.build_editable(r'{out}')"


def _filter() -> str:
    result = subprocess.run(
        ["bash", "-c", f'source "{ROOT}/scripts/_env.sh"; printf %s "$QUIET_EDITABLE"'],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def _build(project: Path, out: Path, warnings: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    if warnings is not None:
        env["PYTHONWARNINGS"] = warnings
    result = subprocess.run(
        [sys.executable, "-c", BUILD.format(out=out)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_the_editable_install_shows_no_setuptools_banner(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, project / name)
    for package in ("app", "engine_mlx"):
        shutil.copytree(
            ROOT / package, project / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    assert "Editable installation" in _build(project, tmp_path / "plain", None)  # what users saw
    assert "Editable installation" not in _build(project, tmp_path / "quiet", _filter())
