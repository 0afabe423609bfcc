"""packaging/: bundle metadata checked here on any OS, and (slow) a real frozen build that proves itself."""

from __future__ import annotations

import importlib.util
import json
import os
import plistlib
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
BUILD = PACKAGING / "build"


def _load_bundle_module():
    # Loaded by path: packaging/ is deliberately not a package (it would shadow PyPI's "packaging").
    spec = importlib.util.spec_from_file_location(
        "qwendesk_bundle", PACKAGING / "qwendesk_bundle.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def qb():
    return _load_bundle_module()


def _pyproject_version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["version"]


# --------------------------------------------------------------------------------------- metadata


def test_info_plist_has_the_keys_a_mac_needs(qb, tmp_path):
    path = qb.write_info_plist(tmp_path / "Info.plist")
    with open(path, "rb") as handle:
        plist = plistlib.load(handle)
    assert plist["CFBundleShortVersionString"] == _pyproject_version()
    assert plist["CFBundleVersion"] == _pyproject_version()
    assert (
        plist["CFBundleIdentifier"] == qb.BUNDLE_ID and plist["CFBundleIdentifier"].count(".") >= 2
    )
    assert plist["CFBundleName"] == plist["CFBundleExecutable"] == "QwenDesk"
    assert plist["CFBundlePackageType"] == "APPL"
    assert plist["NSHighResolutionCapable"] is True
    assert plist["LSRequiresNativeExecution"] is True
    major, minor = (int(p) for p in plist["LSMinimumSystemVersion"].split("."))
    assert (major, minor) >= (14, 0)  # MLX's oldest Metal wheel
    # Images, PDFs and movies can be dropped on the Dock icon and opened with "Open With".
    utis = {uti for t in plist["CFBundleDocumentTypes"] for uti in t["LSItemContentTypes"]}
    assert {"public.image", "com.adobe.pdf", "public.movie"} <= utis
    for doc_type in plist["CFBundleDocumentTypes"]:
        assert doc_type["CFBundleTypeRole"] == "Viewer"
        assert doc_type["LSHandlerRank"] == "Alternate"  # never steal the user's default viewer


def test_min_macos_follows_the_installed_mlx_metal_wheel(qb, monkeypatch):
    class FakeDist:
        def __init__(self, tag):
            self.tag = tag

        def read_text(self, name):
            assert name == "WHEEL"
            return f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {self.tag}\n"

    tags = {"mlx": "cp311-cp311-macosx_14_0_arm64", "mlx-metal": "py3-none-macosx_15_0_arm64"}

    def distribution(name):
        if name not in tags:
            raise qb.metadata.PackageNotFoundError(name)
        return FakeDist(tags[name])

    monkeypatch.setattr(qb.metadata, "distribution", distribution)
    monkeypatch.delenv("QWENDESK_MIN_MACOS", raising=False)
    assert qb.min_macos_version() == "15.0"  # a macOS 15 metallib cannot load on 14
    tags["mlx-metal"] = "py3-none-macosx_26_0_arm64"
    assert qb.min_macos_version() == "26.0"
    tags.clear()
    assert qb.min_macos_version() == qb.MLX_OLDEST_MACOS  # Linux: no Metal wheel installed
    monkeypatch.setenv("QWENDESK_MIN_MACOS", "15.2")
    assert qb.min_macos_version() == "15.2"


def test_build_info_carries_the_version(qb, tmp_path):
    info = json.loads(qb.write_build_info(tmp_path / "b.json").read_text())
    assert info["version"] == _pyproject_version() and info["name"] == "QwenDesk"


def test_icon_source_and_icns(tmp_path):
    from PIL import Image

    with Image.open(ROOT / "resources" / "icon.png") as png:
        assert png.size == (1024, 1024) and png.mode == "RGBA"
    spec = importlib.util.spec_from_file_location("make_icon", PACKAGING / "make_icon.py")
    make_icon = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_icon)
    icns = make_icon.to_icns(ROOT / "resources" / "icon.png", tmp_path / "QwenDesk.icns")
    assert icns.read_bytes()[:4] == b"icns"
    with Image.open(icns) as image:
        assert image.format == "ICNS" and image.size == (1024, 1024)
        assert (512, 512, 2) in image.info["sizes"] and (16, 16, 2) in image.info["sizes"]


def test_entitlements_are_a_valid_minimal_plist():
    with open(PACKAGING / "entitlements.plist", "rb") as handle:
        entitlements = plistlib.load(handle)
    assert entitlements == {"com.apple.security.cs.allow-unsigned-executable-memory": True}


def test_build_script_and_spec_are_well_formed():
    assert os.access(BUILD, os.X_OK)
    subprocess.run(["bash", "-n", str(BUILD)], check=True)
    usage = subprocess.run(
        [str(BUILD), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--sign" in usage and "--notarize" in usage and "--self-test" in usage
    compile((PACKAGING / "qwendesk.spec").read_text(), "qwendesk.spec", "exec")
    assert not (PACKAGING / "__init__.py").exists()  # would shadow PyPI's "packaging"


# --------------------------------------------------------------------------------------- the build


def _tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.slow
@pytest.mark.skipif(
    sys.platform != "linux", reason="CI builds the Linux bundle; macOS is built by hand (README)"
)
def test_linux_bundle_builds_and_passes_its_self_test(tmp_path, capsys):
    if importlib.util.find_spec("PyInstaller") is None:
        pytest.fail(
            "PyInstaller is missing: it is in pyproject's test extra (scripts/test installs it)"
        )
    dist, work = tmp_path / "dist", tmp_path / "work"
    env = {**os.environ, "QWENDESK_PYTHON": sys.executable}
    started = time.perf_counter()
    build = subprocess.run(
        [str(BUILD), "--dist", str(dist), "--work", str(work)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        stdin=subprocess.DEVNULL,
    )
    build_s = time.perf_counter() - started
    assert build.returncode == 0, (
        f"packaging/build failed:\n{build.stdout[-3000:]}\n{build.stderr[-6000:]}"
    )
    try:
        bundle = dist / "QwenDesk"
        exe = bundle / "QwenDesk"
        internal = bundle / "_internal"
        assert exe.is_file() and os.access(exe, os.X_OK)

        files = [p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()]
        # No second Qt: opencv-python's Qt 5 must not come along with PySide6's Qt 6.
        assert not [f for f in files if "libQt5" in f or f.startswith("_internal/cv2/qt/")]
        # MLX: the extension and its library side by side in mlx/ (where MLX looks for its kernels).
        assert list((internal / "mlx").glob("core.*.so"))
        assert (internal / "mlx" / "lib" / "libmlx.so").is_file()
        assert (internal / "engine_mlx" / "templates" / "qwen3_5_chat_template.jinja").is_file()
        assert (internal / "resources" / "icon.png").is_file()
        assert not (internal / "resources" / "screenshots").exists()
        # Lean: no models, no torch, no data-science stack, no Qt modules the app does not use.
        assert not [f for f in files if f.endswith((".safetensors", ".gguf", ".npz"))]
        for heavy in (
            "torch",
            "scipy",
            "pandas",
            "pyarrow",
            "datasets",
            "fsspec",
            "hf_xet",
            "mlx_audio",
        ):
            assert not (internal / heavy).exists(), heavy
        assert not [
            f for f in files if "libQt6Qml" in f or "libQt6Quick" in f or "QtWebEngine" in f
        ]
        # Only the Qwen families of transformers.
        families = {p.name for p in (internal / "transformers" / "models").iterdir() if p.is_dir()}
        assert {"auto", "qwen3_5", "qwen3_5_moe", "qwen2"} <= families and len(families) < 20

        size_mb = _tree_size(bundle) / 1e6

        # Run it as a user would: from elsewhere, MLX compiling its kernels (no MLX_DISABLE_COMPILE),
        # a fresh temp folder (so the compile cache starts empty), no display, no source tree.
        run_env = {
            k: v for k, v in os.environ.items() if k not in ("MLX_DISABLE_COMPILE", "PYTHONPATH")
        }
        (tmp_path / "tmp").mkdir()
        run_env["TMPDIR"] = str(tmp_path / "tmp")
        started = time.perf_counter()
        proc = subprocess.run(
            [str(exe), "--self-test"],
            cwd=tmp_path,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=900,
            stdin=subprocess.DEVNULL,
        )
        self_test_s = time.perf_counter() - started
        lines = proc.stdout.splitlines()
        assert len(lines) == 1, f"stdout: {proc.stdout!r}\nstderr:\n{proc.stderr[-4000:]}"
        result = json.loads(lines[0])
        failed = {k: v["detail"] for k, v in result["checks"].items() if not v["ok"]}
        assert proc.returncode == 0 and result["ok"], (
            f"failed: {failed}\nstderr:\n{proc.stderr[-4000:]}"
        )
        assert result["frozen"] is True
        assert result["version"] == _pyproject_version()
        assert set(result["checks"]) >= {
            "imports",
            "qt",
            "mlx",
            "media",
            "tiny_model",
            "load",
            "generate",
            "store",
        }
        with capsys.disabled():
            timings = ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in result["checks"].items())
            print(
                f"\n[packaging] Linux bundle: {size_mb:.0f} MB in {len(files)} files; built in {build_s:.0f}s; "
                f"--self-test {self_test_s:.1f}s ({timings})"
            )
    finally:
        shutil.rmtree(dist, ignore_errors=True)  # ~0.5 GB
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------- macOS path
# The Mac steps of packaging/build (icon, signing order, metallib check, notarization, DMG) run here
# against stand-ins for uname, codesign, hdiutil, xcrun, ... that log their arguments, and a stand-in
# PyInstaller that lays out a .app the way PyInstaller 6 does. What the real tools do is Apple's.

_FAKE_PYTHON = r"""#!{python}
import os, plistlib, subprocess, sys
from pathlib import Path

REAL = {python!r}
LOG = os.environ["STUB_LOG"]
args = sys.argv[1:]

def log(line):
    with open(LOG, "a") as handle:
        handle.write(line + "\n")

if args[:1] == ["-c"] and "import PyInstaller" in args[1]:
    sys.exit(0)
if args[:3] == ["-m", "pip", "show"]:
    sys.exit(1)  # opencv-python (Qt 5) is not installed
if args[:2] == ["-m", "PyInstaller"]:
    dist = Path(args[args.index("--distpath") + 1])
    log("pyinstaller icns=%s identity=%s" % (os.environ.get("QWENDESK_ICNS"), os.environ.get("QWENDESK_CODESIGN_IDENTITY")))
    icns = os.environ.get("QWENDESK_ICNS")
    assert icns and open(icns, "rb").read(4) == b"icns", icns
    contents = dist / "QwenDesk.app" / "Contents"
    for sub in ("MacOS", "Frameworks/mlx/lib", "Frameworks/Python.framework/Versions/3.11", "Resources/mlx/lib"):
        (contents / sub).mkdir(parents=True, exist_ok=True)
    exe = contents / "MacOS" / "QwenDesk"
    exe.write_text("#!/bin/sh\necho '{{\"ok\": true}}'\n")
    exe.chmod(0o755)
    (contents / "Frameworks/mlx/lib/libmlx.dylib").write_bytes(b"macho")
    (contents / "Frameworks/Python.framework/Versions/3.11/Python").write_bytes(b"macho")
    os.symlink("mlx/lib/libmlx.dylib", contents / "Frameworks/libmlx.dylib")  # PyInstaller's top-level link
    if not os.environ.get("STUB_NO_METALLIB"):
        (contents / "Resources/mlx/lib/mlx.metallib").write_bytes(b"MTLB")
        os.symlink("../../../Resources/mlx/lib/mlx.metallib", contents / "Frameworks/mlx/lib/mlx.metallib")
        if not os.environ.get("STUB_NO_TOP_METALLIB"):
            os.symlink("mlx/lib/mlx.metallib", contents / "Frameworks/mlx.metallib")
    (contents / "Resources/qwendesk_build.json").write_text("{{}}")
    (dist / "QwenDesk").mkdir(exist_ok=True)  # the COLLECT folder BUNDLE was made from
    sys.exit(0)
sys.exit(subprocess.call([REAL, *args]))  # qwendesk_bundle.py, make_icon.py, version query
"""

_STUBS = {
    "uname": 'case "$1" in -m) echo arm64 ;; *) echo Darwin ;; esac',
    "codesign": 'echo "codesign $*" >> "$STUB_LOG"',
    "plutil": 'echo "plutil $*" >> "$STUB_LOG"',
    "spctl": 'echo "spctl $*" >> "$STUB_LOG"',
    "file": 'case "$2" in *.dylib|*/Python|*/MacOS/*) echo "Mach-O 64-bit dynamically linked shared library arm64" ;; *) echo data ;; esac',
    "hdiutil": 'echo "hdiutil $*" >> "$STUB_LOG"; for last; do :; done; touch "$last"',
    "ditto": (
        'echo "ditto $*" >> "$STUB_LOG"; '
        'if [ "$1" = -c ]; then touch "$5"; else cp -a "$1" "$2"; fi'
    ),
    "xcrun": (
        'echo "xcrun $*" >> "$STUB_LOG"; '
        'if [ "$1" = notarytool ]; then echo "  status: ${STUB_NOTARY_STATUS:-Accepted}"; fi'
    ),
}


def _mac_build(tmp_path, *args, **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in _STUBS.items():
        stub = bin_dir / name
        stub.write_text(f"#!/bin/bash\n{body}\n")
        stub.chmod(0o755)
    fake_python = bin_dir / "python-for-build"
    fake_python.write_text(_FAKE_PYTHON.format(python=sys.executable))
    fake_python.chmod(0o755)
    log = tmp_path / "tools.log"
    log.write_text("")
    dist, work = tmp_path / "dist", tmp_path / "work"
    shutil.rmtree(dist, ignore_errors=True)
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QWENDESK_")},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "QWENDESK_PYTHON": str(fake_python),
        "STUB_LOG": str(log),
        **env,
    }
    proc = subprocess.run(
        [str(BUILD), "--dist", str(dist), "--work", str(work), *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    return proc, log.read_text().splitlines(), dist


@pytest.mark.skipif(sys.platform == "darwin", reason="uses stand-ins for the real macOS tools")
def test_macos_path_ad_hoc(tmp_path):
    proc, calls, dist = _mac_build(tmp_path, "--self-test")
    assert proc.returncode == 0, proc.stderr
    assert calls[0] == f"pyinstaller icns={tmp_path / 'work' / 'QwenDesk.icns'} identity=None"
    assert "codesign --force --deep --sign - " + str(dist / "QwenDesk.app") in calls
    assert any(c.startswith("codesign --verify --deep --strict") for c in calls)
    assert any(c.startswith("plutil -lint") for c in calls)
    assert not any("notarytool" in c for c in calls)
    dmg = dist / f"QwenDesk-{_pyproject_version()}.dmg"
    assert dmg.exists()
    create = next(c for c in calls if c.startswith("hdiutil create"))
    assert "-format UDZO" in create and create.endswith(str(dmg))
    assert not (dist / "QwenDesk").exists()  # only the .app and the DMG are left
    assert "Self-test" in proc.stderr


@pytest.mark.skipif(sys.platform == "darwin", reason="uses stand-ins for the real macOS tools")
def test_macos_path_developer_id_signs_inside_out_and_notarizes(tmp_path):
    identity = "Developer ID Application: Test Person (TEAM123456)"
    proc, calls, dist = _mac_build(tmp_path, "--sign", identity, "--notarize", "qwendesk-notary")
    assert proc.returncode == 0, proc.stderr
    app = dist / "QwenDesk.app"
    assert calls[0].endswith(f"identity={identity}")  # PyInstaller signs what it collects, too
    signing = [c for c in calls if c.startswith("codesign --force")]
    runtime = f"codesign --force --timestamp --options runtime --sign {identity}"
    entitled = f"{runtime} --entitlements {PACKAGING / 'entitlements.plist'}"
    # Inside-out: libraries, then the framework, then the executable, then the app; never --deep.
    libraries = ("Python.framework/Versions/3.11/Python", "mlx/lib/libmlx.dylib")
    assert set(signing[:2]) == {f"{runtime} {app}/Contents/Frameworks/{p}" for p in libraries}
    assert signing[2] == f"{runtime} {app}/Contents/Frameworks/Python.framework"
    assert signing[3:5] == [f"{entitled} {app}/Contents/MacOS/QwenDesk", f"{entitled} {app}"]
    assert not any("--deep" in c for c in signing[:5])
    assert not any("mlx.metallib" in c for c in signing)  # data, sealed by the bundle signature
    # Notarize the app and staple it, then the DMG made from it.
    notary = [
        c
        for c in calls
        if c.startswith(("xcrun", "hdiutil", "codesign --force --timestamp --sign"))
    ]
    dmg = dist / f"QwenDesk-{_pyproject_version()}.dmg"
    assert notary[0].startswith("xcrun notarytool submit") and notary[0].split()[3].endswith(".zip")
    assert "--keychain-profile qwendesk-notary --wait" in notary[0]
    assert notary[1] == f"xcrun stapler staple {app}"
    assert notary[2].startswith("hdiutil create")
    assert notary[3] == f"codesign --force --timestamp --sign {identity} {dmg}"
    assert notary[4].startswith(f"xcrun notarytool submit {dmg}")
    assert notary[5] == f"xcrun stapler staple {dmg}"
    assert calls[-1] == f"spctl --assess --type execute -vv {app}"


@pytest.mark.skipif(sys.platform == "darwin", reason="uses stand-ins for the real macOS tools")
def test_macos_path_refuses_a_bundle_without_the_metallib_or_a_rejected_notarization(tmp_path):
    proc, _calls, _dist = _mac_build(tmp_path, STUB_NO_METALLIB="1")
    assert proc.returncode != 0 and "mlx.metallib is not next to libmlx.dylib" in proc.stderr
    proc, _calls, _dist = _mac_build(tmp_path, STUB_NO_TOP_METALLIB="1")
    assert proc.returncode != 0 and "Contents/Frameworks/mlx.metallib)" in proc.stderr
    proc, _calls, _dist = _mac_build(tmp_path, "--notarize", "p")
    assert proc.returncode != 0 and "--notarize needs --sign" in proc.stderr
    proc, _calls, _dist = _mac_build(
        tmp_path,
        "--sign",
        "Developer ID Application: X (T)",
        "--notarize",
        "p",
        STUB_NOTARY_STATUS="Invalid",
    )
    assert proc.returncode != 0 and "notarization failed" in proc.stderr
