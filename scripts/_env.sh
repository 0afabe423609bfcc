# Shared by scripts/run and scripts/test: make .venv if it is missing or stale, then install the project.
# Stale means pyproject.toml or constraints.txt changed since the last install, or the venv's Python is gone.
# Every pip call runs with constraints.txt (PIP_CONSTRAINT also reaches pip's build environments), so a
# fresh machine gets exactly the tested set of packages, transitive ones included.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.qwendesk-installed"
CONSTRAINTS="$ROOT/constraints.txt"
# setuptools announces every editable install with a boxed "Editable installation." warning; it says
# nothing a QwenDesk user can act on, so the install below filters it out.
QUIET_EDITABLE="ignore:Editable installation"

find_python() {
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "QwenDesk needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)." >&2
    return 1
}

ensure_env() {
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        rm -rf "$VENV"
        "$(find_python)" -m venv "$VENV"
    fi
    if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ] || [ "$CONSTRAINTS" -nt "$STAMP" ]; then
        export PIP_CONSTRAINT="$CONSTRAINTS"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        PYTHONWARNINGS="$QUIET_EDITABLE" "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]"
        # mlx-vlm depends on opencv-python, whose Linux wheel ships Qt5 and points Qt's plugin path
        # at it on import. The headless wheel is the same cv2 without Qt: keep only that one.
        if "$VENV/bin/python" -m pip show --quiet opencv-python >/dev/null 2>&1; then
            "$VENV/bin/python" -m pip uninstall --quiet -y opencv-python
            "$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps opencv-python-headless
        fi
        unset PIP_CONSTRAINT
        touch "$STAMP"
    fi
}
