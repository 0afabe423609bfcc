"""Facts about the QwenDesk bundle, shared by the PyInstaller spec, packaging/build and the tests.

Standard library only, and no imports of the app: the spec imports this in PyInstaller's process,
and tests load it by path. (The folder is not a package on purpose: a ``packaging/__init__.py`` at
the repository root would shadow the PyPI ``packaging`` library that transformers and pip import.)
"""

from __future__ import annotations

import json
import os
import plistlib
import re
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP_NAME = "QwenDesk"
# Reverse-DNS bundle id; Developer ID builds may override it (it must match the notarized app).
BUNDLE_ID = os.environ.get("QWENDESK_BUNDLE_ID", "io.github.qwendesk.QwenDesk")
# The oldest macOS that MLX publishes Metal wheels for; used when no mlx-metal wheel is installed
# (Linux) and as a floor.
MLX_OLDEST_MACOS = "14.0"
COPYRIGHT = "QwenDesk contributors. Apache-2.0."

# What a user can drop on the Dock icon or open with "Open With": the parent UTIs cover every
# image and movie format macOS knows; the engine reads what Pillow, pdfium and OpenCV can decode.
# Rank "Alternate": QwenDesk offers to open these, it never becomes their default app.
DOCUMENT_TYPES = (
    {
        "CFBundleTypeName": "Image",
        "CFBundleTypeRole": "Viewer",
        "LSHandlerRank": "Alternate",
        "LSItemContentTypes": [
            "public.image",
            "public.png",
            "public.jpeg",
            "public.heic",
            "public.tiff",
            "com.compuserve.gif",
            "com.microsoft.bmp",
            "org.webmproject.webp",
        ],
    },
    {
        "CFBundleTypeName": "PDF Document",
        "CFBundleTypeRole": "Viewer",
        "LSHandlerRank": "Alternate",
        "LSItemContentTypes": ["com.adobe.pdf"],
    },
    {
        "CFBundleTypeName": "Movie",
        "CFBundleTypeRole": "Viewer",
        "LSHandlerRank": "Alternate",
        "LSItemContentTypes": [
            "public.movie",
            "public.mpeg-4",
            "com.apple.quicktime-movie",
            "public.avi",
            "org.webmproject.webm",
            "org.matroska.mkv",
        ],
    },
)


def project_version(root: Path = ROOT) -> str:
    """``[project].version`` from pyproject.toml: the one place the version is written."""
    with open(root / "pyproject.toml", "rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


# The binary wheels that end up in the bundle; each one's platform tag bounds the macOS it runs on.
BINARY_DISTS = (
    "mlx",
    "mlx-metal",
    "numpy",
    "pyside6-essentials",
    "shiboken6",
    "opencv-python-headless",
    "pillow",
    "pypdfium2",
    "tokenizers",
    "safetensors",
    "sentencepiece",
    "regex",
)


def _wheel_macos_version(dist_name: str) -> tuple[int, int] | None:
    """The macOS version in an installed wheel's platform tag (``macosx_14_0_arm64`` -> (14, 0))."""
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return None
    text = dist.read_text("WHEEL") or ""
    found = [
        (int(major), int(minor))
        for major, minor in re.findall(r"^Tag:.*macosx_(\d+)_(\d+)_", text, flags=re.MULTILINE)
    ]
    return min(found) if found else None


def min_macos_version() -> str:
    """LSMinimumSystemVersion: the newest macOS that any bundled binary wheel was built for.

    MLX publishes mlx/mlx-metal wheels per macOS release (14, 15, 26); pip installs the newest one
    the build machine can run, and its mlx.metallib uses that release's Metal language, which fails
    to load on older systems. So the bundle must not claim to run on anything older than its wheels
    (in practice MLX's decides; numpy, Qt and the others are checked the same way).
    ``QWENDESK_MIN_MACOS`` overrides (only ever to a newer version).
    """
    floor = tuple(int(p) for p in MLX_OLDEST_MACOS.split("."))
    versions = [floor] + [v for v in map(_wheel_macos_version, BINARY_DISTS) if v]
    override = os.environ.get("QWENDESK_MIN_MACOS")
    if override:
        versions.append(tuple(int(p) for p in override.split(".")[:2]))
    major, minor = max(versions)
    return f"{major}.{minor}"


def git_commit(root: Path = ROOT) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def info_plist(version: str | None = None, min_macos: str | None = None) -> dict:
    """The Info.plist keys QwenDesk.app adds to PyInstaller's defaults (BUNDLE(info_plist=...))."""
    version = version or project_version()
    return {
        "CFBundleName": APP_NAME,
        "CFBundleDisplayName": APP_NAME,
        "CFBundleIdentifier": BUNDLE_ID,
        "CFBundleExecutable": APP_NAME,
        "CFBundlePackageType": "APPL",
        "CFBundleInfoDictionaryVersion": "6.0",
        "CFBundleShortVersionString": version,
        "CFBundleVersion": version,
        "CFBundleIconFile": f"{APP_NAME}.icns",
        "CFBundleDocumentTypes": [dict(t) for t in DOCUMENT_TYPES],
        "LSMinimumSystemVersion": min_macos or min_macos_version(),
        # MLX's Metal backend needs Apple silicon; never start under Rosetta.
        "LSArchitecturePriority": ["arm64"],
        "LSRequiresNativeExecution": True,
        "LSApplicationCategoryType": "public.app-category.productivity",
        "NSHighResolutionCapable": True,
        "NSPrincipalClass": "NSApplication",
        "NSRequiresAquaSystemAppearance": False,  # follow the system's dark mode
        "NSSupportsAutomaticGraphicsSwitching": True,
        "NSHumanReadableCopyright": COPYRIGHT,
    }


def write_info_plist(path: Path, **kwargs) -> Path:
    """Write a complete Info.plist (what the built bundle carries), for checking without a Mac."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        plistlib.dump(info_plist(**kwargs), handle)
    return path


def build_info(version: str | None = None) -> dict:
    """Baked into the bundle as ``qwendesk_build.json``: what the self-test reports as the version."""
    return {
        "name": APP_NAME,
        "version": version or project_version(),
        "commit": git_commit(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": sys.platform,
        "min_macos": min_macos_version() if sys.platform == "darwin" else None,
    }


def write_build_info(path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_info(), indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python packaging/qwendesk_bundle.py version|min-macos|info-plist PATH``, for packaging/build."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["version"]:
        print(project_version())
    elif args == ["min-macos"]:
        print(min_macos_version())
    elif len(args) == 2 and args[0] == "info-plist":
        print(write_info_plist(Path(args[1])))
    else:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: qwendesk_bundle.py version | min-macos | info-plist PATH", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
