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
    spec = importlib.util.spec_from_file_location("qwendesk_bundle", PACKAGING / "qwendesk_bundle.py")
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
    assert plist["CFBundleIdentifier"] == qb.BUNDLE_ID and plist["CFBundleIdentifier"].count(".") >= 2
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
    usage = subprocess.run([str(BUILD), "--help"], capture_output=True, text=True, check=True).stdout
    assert "--sign" in usage and "--notarize" in usage and "--self-test" in usage
    compile((PACKAGING / "qwendesk.spec").read_text(), "qwendesk.spec", "exec")
    assert not (PACKAGING / "__init__.py").exists()  # would shadow PyPI's "packaging"


# --------------------------------------------------------------------------------------- the build


def _tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="CI builds the Linux bundle; macOS is built by hand (README)")
def test_linux_bundle_builds_and_passes_its_self_test(tmp_path, capsys):
    if importlib.util.find_spec("PyInstaller") is None:
        pytest.fail("PyInstaller is missing: it is in pyproject's test extra (scripts/test installs it)")
    dist, work = tmp_path / "dist", tmp_path / "work"
    env = {**os.environ, "QWENDESK_PYTHON": sys.executable}
    started = time.perf_counter()
    build = subprocess.run(
        [str(BUILD), "--dist", str(dist), "--work", str(work)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL,
    )
    build_s = time.perf_counter() - started
    assert build.returncode == 0, f"packaging/build failed:\n{build.stdout[-3000:]}\n{build.stderr[-6000:]}"
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
        # Lean: no models, no torch, no data-science stack, no Qt modules the app does not use.
        assert not [f for f in files if f.endswith((".safetensors", ".gguf", ".npz"))]
        for heavy in ("torch", "scipy", "pandas", "pyarrow", "datasets", "fsspec", "hf_xet", "mlx_audio"):
            assert not (internal / heavy).exists(), heavy
        assert not [f for f in files if "libQt6Qml" in f or "libQt6Quick" in f or "QtWebEngine" in f]
        # Only the Qwen families of transformers.
        families = {p.name for p in (internal / "transformers" / "models").iterdir() if p.is_dir()}
        assert {"auto", "qwen3_5", "qwen3_5_moe", "qwen2"} <= families and len(families) < 20

        size_mb = _tree_size(bundle) / 1e6

        # Run it as a user would: from elsewhere, MLX compiling its kernels (no MLX_DISABLE_COMPILE),
        # a fresh temp folder (so the compile cache starts empty), no display, no source tree.
        run_env = {k: v for k, v in os.environ.items() if k not in ("MLX_DISABLE_COMPILE", "PYTHONPATH")}
        (tmp_path / "tmp").mkdir()
        run_env["TMPDIR"] = str(tmp_path / "tmp")
        started = time.perf_counter()
        proc = subprocess.run(
            [str(exe), "--self-test"], cwd=tmp_path, env=run_env, capture_output=True, text=True,
            timeout=900, stdin=subprocess.DEVNULL,
        )
        self_test_s = time.perf_counter() - started
        lines = proc.stdout.splitlines()
        assert len(lines) == 1, f"stdout: {proc.stdout!r}\nstderr:\n{proc.stderr[-4000:]}"
        result = json.loads(lines[0])
        failed = {k: v["detail"] for k, v in result["checks"].items() if not v["ok"]}
        assert proc.returncode == 0 and result["ok"], f"failed: {failed}\nstderr:\n{proc.stderr[-4000:]}"
        assert result["frozen"] is True
        assert result["version"] == _pyproject_version()
        assert set(result["checks"]) >= {"imports", "qt", "mlx", "media", "tiny_model", "load", "generate", "store"}
        with capsys.disabled():
            timings = ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in result["checks"].items())
            print(
                f"\n[packaging] Linux bundle: {size_mb:.0f} MB in {len(files)} files; built in {build_s:.0f}s; "
                f"--self-test {self_test_s:.1f}s ({timings})"
            )
    finally:
        shutil.rmtree(dist, ignore_errors=True)  # ~0.5 GB
        shutil.rmtree(work, ignore_errors=True)
