"""The layers hold: the import-linter contracts in pyproject.toml pass, and each one fails on a violation.

scripts/test runs ``lint-imports`` itself; these tests also prove that every contract can fail, and
check at run time what a static graph cannot see: that no library the engine imports pulls Qt in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QT = ("PySide6", "shiboken6", "PyQt5", "PyQt6")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", "--no-logo"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)


def _contract_names() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return [contract["name"] for contract in config["contracts"]]


def test_the_layer_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in _contract_names():
        assert f"{name} KEPT" in result.stdout


# One violation per contract: (file, the line added to it, the contract it breaks).
VIOLATIONS = [
    ("engine_mlx/sizes.py", "import PySide6", "The engine never imports Qt or the app"),
    ("engine_mlx/settings.py", "import app.paths", "The engine never imports Qt or the app"),
    # Indirect: the engine imports the generation loop.
    (
        "engine_mlx/snapshots.py",
        "from engine_mlx import engine",
        "The snapshot store never imports the generation loop",
    ),
    (
        "engine_mlx/checkpoint.py",
        "import httpx2",
        "Only engine_mlx.hub talks to the Hugging Face Hub and the network",
    ),
    (
        "app/store.py",
        "import huggingface_hub",
        "Only engine_mlx.hub talks to the Hugging Face Hub and the network",
    ),
    ("app/window.py", "import uvicorn", "Only engine_mlx.server serves HTTP"),
    (
        "engine_mlx/cli.py",
        "from starlette.routing import Route",
        "Only engine_mlx.server serves HTTP",
    ),
]


@pytest.mark.parametrize(
    ("path", "line", "contract"), VIOLATIONS, ids=[v[0] + ": " + v[1] for v in VIOLATIONS]
)
def test_each_contract_fails_on_a_violation(tmp_path, path, line, contract):
    assert contract in _contract_names()
    ignore = shutil.ignore_patterns("__pycache__")
    for package in ("engine_mlx", "app"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / path).open("a") as f:
        f.write(f"\n{line}\n")

    result = _lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout
    assert result.stdout.count(" BROKEN") == 1  # and no other


def test_no_engine_module_pulls_in_qt_at_run_time():
    """What the static graph cannot see: a library the engine imports that imports Qt itself (as
    opencv-python's Qt5 build did). Every engine module is imported, the CLI's ``__main__`` aside."""
    code = (
        "import importlib, pkgutil, sys, engine_mlx\n"
        "names = [m.name for m in pkgutil.walk_packages(engine_mlx.__path__, 'engine_mlx.')\n"
        "         if not m.name.endswith('__main__')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {QT!r})\n"
        "print(' '.join(names)); print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    files = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "engine_mlx").rglob("*.py")
    }
    modules = {name.removesuffix(".__init__") for name in files} - {
        "engine_mlx",
        "engine_mlx.__main__",
    }
    assert set(result.stdout.split("\n")[0].split()) == modules


def test_the_main_window_keeps_to_menus_shortcuts_and_wiring():
    """window.py stays under 400 lines; routing, lists, loading and layout live in the
    presenters, the transcript and theme.py, so new features land there rather than here."""
    lines = (ROOT / "app" / "window.py").read_text().count("\n")
    assert lines < 400, f"app/window.py has {lines} lines: move the new part into a presenter"
