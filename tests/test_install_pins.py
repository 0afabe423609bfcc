"""Installs are reproducible: constraints.txt pins every package, and agrees with pyproject.toml.

scripts/_env.sh installs with constraints.txt, so what it pins is what a fresh machine gets. These
checks need no network: they compare the two files with each other and with this environment.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# The libraries the engine drives: an exact pin in pyproject.toml itself, not only in constraints.
ENGINE_LIBRARIES = {
    "mlx",
    "mlx-lm",
    "mlx-vlm",
    "transformers",
    "tokenizers",
    "huggingface-hub",
    "safetensors",
    "jinja2",
    "numpy",
    "pillow",
    "opencv-python-headless",
    "pypdfium2",
}


def _constraints() -> dict[str, Requirement]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            req = Requirement(line)
            assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", line
            pins[canonicalize_name(req.name)] = req
    return pins


def _dependencies() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        deps += extra
    return [Requirement(d) for d in deps]


def _version(req: Requirement) -> str:
    return next(iter(req.specifier)).version


def test_every_dependency_is_pinned_in_constraints_and_fits_pyproject():
    pins = _constraints()
    for dep in _dependencies():
        name = canonicalize_name(dep.name)
        assert name in pins, f"{dep.name} is not pinned in constraints.txt"
        assert dep.specifier.contains(_version(pins[name]), prereleases=True), (
            str(dep),
            str(pins[name]),
        )
        for extra in dep.extras:  # mlx[cpu] brings mlx-cpu
            assert canonicalize_name(f"{dep.name}-{extra}") in pins


def test_the_engine_libraries_are_pinned_exactly_in_pyproject():
    exact = {
        canonicalize_name(d.name)
        for d in _dependencies()
        if len(d.specifier) == 1 and next(iter(d.specifier)).operator == "=="
    }
    assert ENGINE_LIBRARIES <= exact, ENGINE_LIBRARIES - exact


def test_this_environment_is_the_pinned_one():
    pins = _constraints()
    for dep in _dependencies():
        if dep.marker is not None and not dep.marker.evaluate():
            continue
        name = canonicalize_name(dep.name)
        assert importlib.metadata.version(dep.name) == _version(pins[name]), dep.name


def test_the_install_script_uses_the_constraints():
    script = (ROOT / "scripts" / "_env.sh").read_text()
    assert (
        'PIP_CONSTRAINT="$CONSTRAINTS"' in script
        and 'CONSTRAINTS="$ROOT/constraints.txt"' in script
    )
    assert '[ "$CONSTRAINTS" -nt "$STAMP" ]' in script  # a changed lock reinstalls
