"""``python -m app --self-test``: the real tiny model through the real engine and store, one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECTED_CHECKS = {"imports", "qt", "mlx", "media", "tiny_model", "load", "generate", "store"}


def _version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["version"]


def _run(args: list[str], timeout: float = 600, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    return subprocess.run(
        args,
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _only_json_line(proc: subprocess.CompletedProcess) -> dict:
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (
        f"stdout must be exactly one JSON line, got {lines!r}\nstderr:\n{proc.stderr[-3000:]}"
    )
    return json.loads(lines[0])


def _assert_passed(proc: subprocess.CompletedProcess, result: dict) -> None:
    failed = {k: v["detail"] for k, v in result["checks"].items() if not v["ok"]}
    assert proc.returncode == 0 and result["ok"], (
        f"failed checks: {failed}\nstderr:\n{proc.stderr[-3000:]}"
    )


def test_python_m_app_self_test_passes_and_reports_every_check():
    proc = _run([sys.executable, "-m", "app", "--self-test"])
    result = _only_json_line(proc)
    _assert_passed(proc, result)
    assert set(result["checks"]) == EXPECTED_CHECKS
    for name, check in result["checks"].items():
        assert set(check) == {"ok", "seconds", "detail"}, name
        assert isinstance(check["seconds"], float) and check["seconds"] >= 0
        assert check["detail"], name
    assert result["frozen"] is False
    assert result["version"] == _version()
    assert result["device"] == ("gpu" if sys.platform == "darwin" else "cpu")
    assert result["total_seconds"] >= sum(c["seconds"] for c in result["checks"].values()) * 0.99
    # What the generate check saw: thinking and answer text both streamed, and the turn finished.
    detail = result["checks"]["generate"]["detail"]
    assert "thinking" in detail and "answer" in detail and "finish error" not in detail
    # Library chatter went to stderr, with one progress line per check.
    assert proc.stderr.count("[self-test]") >= len(EXPECTED_CHECKS)


def test_run_function_directly():
    """The function app/__main__.py dispatches to, called as a module-less one-liner."""
    code = "import sys; from app.selftest import run; sys.exit(run(['--only', 'imports', '--only', 'mlx']))"
    proc = _run([sys.executable, "-c", code])
    result = _only_json_line(proc)
    _assert_passed(proc, result)
    assert set(result["checks"]) == {"imports", "mlx"}


def test_a_failing_check_fails_the_run_without_a_traceback_on_stdout(capfd, monkeypatch):
    from app import selftest

    def noisy_ok(ctx):
        print("library chatter on stdout")
        os.write(1, b"native chatter on fd 1\n")
        return "fine"

    def broken(ctx):
        raise RuntimeError("the metallib is missing")

    def needs_model(ctx):
        return selftest._need(ctx, "model")

    monkeypatch.setattr(selftest, "prepare_environment", lambda: None)  # keep this process's env
    monkeypatch.setattr(
        selftest, "CHECKS", (("noisy", noisy_ok), ("broken", broken), ("later", needs_model))
    )
    code = selftest.run(["--self-test"])
    out, err = capfd.readouterr()
    assert code == 1
    result = json.loads(out)  # the only thing on stdout
    assert out.count("\n") == 1
    assert result["ok"] is False
    assert (result["checks"]["noisy"]["ok"], result["checks"]["noisy"]["detail"]) == (True, "fine")
    assert result["checks"]["broken"]["ok"] is False
    assert result["checks"]["broken"]["detail"] == "RuntimeError: the metallib is missing"
    assert result["checks"]["later"]["ok"] is False
    assert result["checks"]["later"]["detail"].startswith("skipped:")
    assert "library chatter" in err and "native chatter" in err
    assert "Traceback" in err and "Traceback" not in out


def test_a_hung_check_still_prints_a_failing_line():
    code = (
        "import sys, time; from app import selftest\n"
        "selftest.CHECKS = (('hangs', lambda ctx: time.sleep(60)),)\n"
        "sys.exit(selftest.run(['--timeout', '2']))\n"
    )
    proc = _run([sys.executable, "-c", code], timeout=120)
    result = _only_json_line(proc)
    assert proc.returncode == 1
    assert result["ok"] is False
    assert result["checks"]["timeout"]["detail"] == "no result after 2s"


def test_self_test_forces_hugging_face_offline(monkeypatch):
    from app import selftest

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_HUB_DISABLE_TELEMETRY", raising=False)
    selftest.prepare_environment()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert os.environ.get("QT_QPA_PLATFORM")


@pytest.mark.parametrize("frozen", [False, True])
def test_version_comes_from_pyproject_or_the_bundle(tmp_path, monkeypatch, frozen):
    from app import selftest

    if frozen:
        (tmp_path / "qwendesk_build.json").write_text(json.dumps({"version": "9.8.7"}))
        monkeypatch.setattr(sys, "frozen", True, raising=False)
        monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
        assert selftest.app_version() == "9.8.7"
    else:
        assert selftest.app_version() == _version()


def test_metallib_check_follows_the_app_bundle_layout(tmp_path):
    """In QwenDesk.app, libmlx.dylib is in Contents/Frameworks/mlx/lib (with a link to it at the top of
    Contents/Frameworks) and mlx.metallib, a data file, in Contents/Resources/mlx/lib, linked back
    beside each libmlx. MLX opens the metallib beside whichever path the libmlx image was loaded from."""
    from app import selftest

    contents = tmp_path / "QwenDesk.app" / "Contents"
    frameworks = contents / "Frameworks"
    resources = contents / "Resources" / "mlx" / "lib"
    (frameworks / "mlx" / "lib").mkdir(parents=True)
    resources.mkdir(parents=True)
    libmlx = frameworks / "mlx" / "lib" / "libmlx.dylib"
    libmlx.write_bytes(b"\xcf\xfa\xed\xfe")
    (frameworks / "libmlx.dylib").symlink_to("mlx/lib/libmlx.dylib")
    with pytest.raises(selftest.CheckFailed, match="mlx.metallib is missing next to"):
        selftest.metallib_detail(libmlx)
    (resources / "mlx.metallib").write_bytes(b"MTLB" + bytes(2_000_000))
    (frameworks / "mlx" / "lib" / "mlx.metallib").symlink_to(
        "../../../Resources/mlx/lib/mlx.metallib"
    )
    assert selftest.metallib_detail(libmlx).endswith("mlx.metallib 1.9 MiB beside it")
    with pytest.raises(selftest.CheckFailed):  # loaded through the top-level link: not found...
        selftest.metallib_detail(frameworks / "libmlx.dylib")
    (frameworks / "mlx.metallib").symlink_to("mlx/lib/mlx.metallib")  # ...unless linked there too
    assert selftest.metallib_detail(frameworks / "libmlx.dylib").endswith("beside it")


def test_loaded_library_finds_libmlx():
    import mlx.core  # noqa: F401

    from app import selftest

    path = selftest.loaded_library("libmlx")
    assert path is not None and path.name.startswith("libmlx") and path.exists()
    assert selftest.loaded_library("libdefinitely-not-loaded") is None
