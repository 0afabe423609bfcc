"""``QwenDesk --self-test``: prove that this installation works end to end, without a window.

Run from a source checkout (``python -m app --self-test``) or from a frozen bundle
(``QwenDesk.app/Contents/MacOS/QwenDesk --self-test``), it:

* imports every library the app needs and the app's own modules (a frozen build that forgot one
  fails here, not in front of a user);
* starts Qt without showing anything and checks the platform and image-format plugins;
* runs one MLX computation (and one compiled function) on the default device: the GPU on a Mac,
  where it also checks that ``mlx.metallib`` sits next to ``libmlx`` as MLX expects;
* reads an image, a PDF page and a video through the engine's media code (Pillow, pdfium, OpenCV);
* builds the tiny random-weight Qwen3.5 model in a temporary folder, loads it with the real engine,
  and answers a question about an image, checking that thinking and answer text both streamed;
* writes that exchange to a temporary history database through the app's store and reads it back.

It prints exactly one JSON line on stdout::

    {"ok": true, "checks": {"mlx": {"ok": true, "seconds": 0.01, "detail": "..."}, ...},
     "device": "gpu", "version": "0.1.0", "frozen": true, "total_seconds": 12.3}

and exits 0 only if every check passed. Everything else (logs, library chatter, tracebacks) goes
to stderr. Nothing is downloaded: Hugging Face is forced offline before anything imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PROMPT = "What is in this image?"
DEFAULT_TIMEOUT_S = 900.0
# Enough for the engine to close the thinking block itself and then write some answer.
THINKING_BUDGET = 8
MAX_TOKENS = 32


class CheckFailed(Exception):
    """A check ran but found something wrong; the message is the detail."""


class Skipped(Exception):
    """A check could not run because an earlier one it needs failed."""


@dataclass
class Result:
    ok: bool
    seconds: float
    detail: str

    def as_json(self) -> dict:
        return {"ok": self.ok, "seconds": round(self.seconds, 3), "detail": self.detail}


@dataclass
class Context:
    """What checks hand to later checks."""

    workdir: Path
    facts: dict = field(default_factory=dict)


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def prepare_environment() -> None:
    """Before any heavy import: offline Hugging Face, no telemetry, and a Qt that needs no display."""
    from engine_mlx import OFFLINE_ENV

    # forced, not defaulted: the self-test proves the app works offline
    os.environ.update(OFFLINE_ENV)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The self-test never shows a window, so it never needs the display server; a caller that wants
    # to test the native platform plugin can still set QT_QPA_PLATFORM itself.
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def app_version() -> str:
    """The bundle's baked-in version when frozen, else the checkout's pyproject.toml, else the
    installed distribution's."""
    if is_frozen():
        info = Path(getattr(sys, "_MEIPASS", "")) / "qwendesk_build.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            return str(json.loads(info.read_text())["version"])
    with contextlib.suppress(Exception):
        import tomllib

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        with open(pyproject, "rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    with contextlib.suppress(Exception):
        from importlib import metadata

        return metadata.version("qwendesk")
    return "unknown"


# ------------------------------------------------------------------------------------------ checks


def check_imports(ctx: Context) -> str:
    import importlib
    import importlib.util

    versions = {}
    for name in (
        "numpy",
        "mlx.core",
        "mlx_lm",
        "mlx_vlm",
        "transformers",
        "tokenizers",
        "PIL",
        "cv2",
        "pypdfium2",
        "PySide6",
        "platformdirs",
        "pygments",
        "markdown_it",
    ):
        module = importlib.import_module(name)
        version = getattr(module, "__version__", None) or getattr(module, "VERSION", None) or ""
        versions[name.split(".")[0]] = str(version)

    # OpenCV must be the headless build: the regular Linux wheel drags in its own Qt 5, which fights
    # PySide6's Qt 6 for the process (and bloats the bundle).
    import cv2

    gui = [line for line in cv2.getBuildInformation().splitlines() if "QT" in line.upper()]
    if any("YES" in line.upper() or "QT5" in line.upper() for line in gui):
        raise CheckFailed(
            f"cv2 is built with Qt ({'; '.join(s.strip() for s in gui)}): use opencv-python-headless"
        )

    # The app's own code, every module of it: a frozen build that missed one of its imports fails
    # here rather than when a user opens that part of the window.
    own = _own_modules()
    for name in own:
        importlib.import_module(name)
    ctx.facts["versions"] = versions
    return ", ".join(f"{k} {v}".strip() for k, v in versions.items()) + f"; app modules: {len(own)}"


def _own_modules() -> list[str]:
    """Every module of the ``engine_mlx`` and ``app`` packages (not ``__main__``).

    From a checkout the files are listed from disk (some sub-folders are namespace packages, which
    pkgutil does not descend into); in a frozen build PyInstaller's importer lists what was bundled.
    """
    import importlib
    import pkgutil

    names: list[str] = []
    for package in ("engine_mlx", "app"):
        module = importlib.import_module(package)
        names.append(package)
        if is_frozen():
            found = [
                info.name for info in pkgutil.walk_packages(module.__path__, prefix=package + ".")
            ]
        else:
            found = []
            for folder in map(Path, module.__path__):
                for path in sorted(folder.rglob("*.py")):
                    parts = path.relative_to(folder).with_suffix("").parts
                    if "__pycache__" in parts or any("-" in p or p.startswith(".") for p in parts):
                        continue
                    if parts[-1] == "__init__":
                        parts = parts[:-1]
                    if parts:
                        found.append(".".join((package, *parts)))
        names += sorted(n for n in set(found) if not n.endswith("__main__"))
    return names


def check_qt(ctx: Context) -> str:
    from PySide6.QtCore import QLibraryInfo, Qt
    from PySide6.QtGui import QColor, QFont, QImage, QImageReader, QPainter
    from PySide6.QtWidgets import QApplication, QLabel

    app = QApplication.instance() or QApplication(["QwenDesk", "--self-test"])
    ctx.facts["qt_app"] = app  # keep it alive until the end
    platform = app.platformName()

    # Text rendering proves a font was found (the offscreen platform still needs fontconfig/CoreText).
    image = QImage(160, 40, QImage.Format.Format_ARGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    painter.setPen(QColor("black"))
    painter.setFont(QFont("", 16))
    painter.drawText(image.rect(), Qt.AlignmentFlag.AlignCenter, "QwenDesk")
    painter.end()
    dark = sum(
        1
        for x in range(0, 160, 2)
        for y in range(0, 40, 2)
        if image.pixelColor(x, y).lightness() < 128
    )
    if dark == 0:
        raise CheckFailed(f"Qt drew no text on the {platform!r} platform: no usable font")

    label = QLabel("self-test")  # a widget, never shown
    label.adjustSize()
    if label.isVisible():
        raise CheckFailed("a window became visible")

    formats = {bytes(f).decode() for f in QImageReader.supportedImageFormats()}
    missing = {"png", "jpeg"} - formats
    if missing:
        raise CheckFailed(f"Qt cannot read {sorted(missing)}: image-format plugins are missing")

    # Where Qt looks for plugins: its own prefix, plus any library paths (QT_PLUGIN_PATH, the app dir).
    roots = [Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath))]
    roots += [Path(p) for p in app.libraryPaths() if Path(p) not in roots]
    native = {"darwin": "libqcocoa.dylib", "linux": "libqxcb.so"}.get(sys.platform)
    found = next(
        (root for root in roots if native and (root / "platforms" / native).exists()), None
    )
    if native and found is None:
        raise CheckFailed(
            f"the native Qt platform plugin {native} is in none of {[str(r) for r in roots]}"
        )
    return f"platform {platform}, image formats {len(formats)}, {native or 'plugins'} in {found or roots[0]}"


def check_mlx(ctx: Context) -> str:
    import mlx.core as mx
    import numpy as np

    device = mx.default_device()
    ctx.facts["device"] = "gpu" if device.type == mx.gpu else "cpu"
    details = [f"default device {device}"]

    if sys.platform == "darwin":
        metal = bool(mx.metal.is_available())
        details.append(f"metal {metal}")
        details.append(_metallib_detail())
        if not metal:
            raise CheckFailed("; ".join(details) + ": Metal is not available to MLX")
    elif (lib := loaded_library("libmlx")) is not None:
        details.append(f"libmlx {lib}")

    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 256), dtype=np.float32)
    b = rng.standard_normal((256, 256), dtype=np.float32)
    start = time.perf_counter()
    got = mx.matmul(mx.array(a), mx.array(b))
    mx.eval(got)
    matmul_s = time.perf_counter() - start
    if not np.allclose(np.array(got), a @ b, rtol=1e-3, atol=1e-2):
        raise CheckFailed(f"MLX matmul on {device} disagrees with numpy")
    details.append(f"matmul 256x256 {matmul_s * 1000:.1f} ms")

    # One compiled function: on a Mac this JIT-builds a Metal kernel, on Linux a C++ one (or falls back
    # when no compiler is installed or MLX_DISABLE_COMPILE is set).
    @mx.compile
    def gelu_ish(x):
        return x * mx.sigmoid(1.702 * x)

    start = time.perf_counter()
    y = gelu_ish(mx.array(a))
    mx.eval(y)
    compile_s = time.perf_counter() - start
    want = a / (1.0 + np.exp(-1.702 * a))
    if not np.allclose(np.array(y), want, rtol=1e-4, atol=1e-4):
        raise CheckFailed(f"an mx.compile'd function on {device} disagrees with numpy")
    disabled = os.environ.get("MLX_DISABLE_COMPILE")
    details.append(
        f"compiled fn {compile_s * 1000:.1f} ms"
        + (" (MLX_DISABLE_COMPILE set)" if disabled else "")
    )
    return "; ".join(details)


def _metallib_detail() -> str:
    """MLX opens ``mlx.metallib`` from the folder of the libmlx image it runs in (dladdr); check that
    folder, for the image the process actually loaded."""
    import mlx.core

    loaded = loaded_library("libmlx")
    if loaded is None:
        # Not found through dyld: fall back to the file layout (mlx is a namespace package, so anchor
        # on the compiled core; lib/ sits beside it in site-packages and in the bundle).
        libs = sorted(Path(mlx.core.__file__).parent.glob("lib/libmlx*.dylib"))
        if not libs:
            raise CheckFailed(f"no lib/libmlx.dylib beside {mlx.core.__file__}")
        loaded = libs[0]
    return metallib_detail(loaded)


def metallib_detail(libmlx: Path) -> str:
    # in the .app, a symlink into Contents/Resources
    metallib = Path(libmlx).parent / "mlx.metallib"
    if not metallib.is_file():
        raise CheckFailed(f"mlx.metallib is missing next to {libmlx}, where MLX looks for it")
    from engine_mlx.sizes import human_bytes

    return f"libmlx {libmlx}; mlx.metallib {human_bytes(metallib.stat().st_size)} beside it"


def loaded_library(prefix: str) -> Path | None:
    """The path under which this process loaded a shared library whose file name starts with ``prefix``
    (as dyld or the dynamic linker recorded it, which is what dladdr reports)."""
    if sys.platform == "darwin":
        import ctypes

        libc = ctypes.CDLL(None)
        libc._dyld_image_count.restype = ctypes.c_uint32
        libc._dyld_get_image_name.restype = ctypes.c_char_p
        libc._dyld_get_image_name.argtypes = [ctypes.c_uint32]
        for index in range(libc._dyld_image_count()):
            name = libc._dyld_get_image_name(index)
            if name and os.path.basename(name.decode()).startswith(prefix):
                return Path(name.decode())
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip() if line.count(" ") >= 5 else ""
                if path.startswith("/") and os.path.basename(path).startswith(prefix):
                    return Path(path)
    except OSError:
        pass
    return None


def check_media(ctx: Context) -> str:
    import cv2
    import numpy as np
    import pypdfium2 as pdfium
    from PIL import Image, ImageDraw

    from engine_mlx import media

    folder = ctx.workdir / "media"
    folder.mkdir(parents=True, exist_ok=True)

    png = folder / "red-square.png"
    img = Image.new("RGB", (320, 240), (200, 30, 30))
    ImageDraw.Draw(img).rectangle([10, 10, 160, 120], fill=(20, 20, 220))
    img.save(png)
    jpeg = folder / "photo.jpg"
    img.save(jpeg, quality=90)
    ctx.facts["image"] = png
    loaded = [media.load_image(p) for p in (png, jpeg)]

    pdf = folder / "pages.pdf"
    doc = pdfium.PdfDocument.new()
    doc.new_page(300, 400)
    doc.new_page(300, 400)
    doc.save(str(pdf))
    doc.close()
    pages = media.load_pdf_pages(pdf)
    if len(pages) != 2:
        raise CheckFailed(f"expected 2 PDF pages, got {len(pages)}")

    video = folder / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    if not writer.isOpened():
        raise CheckFailed("OpenCV cannot write an MJPG/AVI video")
    for i in range(20):
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[:, : (i * 7) % 160] = (0, 180, 255)
        writer.write(frame)
    writer.release()
    sampled = media.sample_video(video, fps=2.0)
    if not sampled.frames:
        raise CheckFailed("no frames were sampled from the test video")
    return (
        f"images {[i.size for i in loaded]}, pdf pages {len(pages)} {pages[0].size}, "
        f"video frames {len(sampled.frames)} of {sampled.duration_s:.1f}s"
    )


def check_tiny_model(ctx: Context) -> str:
    from engine_mlx.tiny import build_tiny_model

    path = build_tiny_model(ctx.workdir / "tiny-model")
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    ctx.facts["model"] = path
    from engine_mlx.sizes import human_bytes

    return f"{path.name}: {human_bytes(size)}"


def check_load(ctx: Context) -> str:
    model = _need(ctx, "model")
    from engine_mlx.engine import Engine

    engine = Engine(state_dir=ctx.workdir / "engine-state")
    stages: list[str] = []
    info = engine.load(model, progress=lambda p: stages.append(p.stage))
    ctx.facts["engine"] = engine
    name = getattr(info, "name", "") or model.name
    return f"loaded {name} ({len(stages)} progress reports)"


def check_generate(ctx: Context) -> str:
    engine = _need(ctx, "engine")
    image = _need(ctx, "image")
    from engine_mlx.conversation import Conversation, ImageAttachment, Message, Role
    from engine_mlx.events import AnswerDelta, Finished, FinishReason, Stats, ThinkingDelta
    from engine_mlx.settings import GenerationSettings

    conversation = Conversation(
        (Message(Role.USER, PROMPT, (ImageAttachment(Path(image)),)),), id="selftest"
    )
    settings = GenerationSettings(
        thinking=True, thinking_budget=THINKING_BUDGET, max_tokens=MAX_TOKENS, seed=0
    )
    thinking: list[str] = []
    answer: list[str] = []
    stats = None
    finished = None
    first_token_s = None
    start = time.perf_counter()
    for event in engine.generate(conversation, settings):
        if isinstance(event, (ThinkingDelta, AnswerDelta)) and first_token_s is None:
            first_token_s = time.perf_counter() - start
        if isinstance(event, ThinkingDelta):
            thinking.append(event.text)
        elif isinstance(event, AnswerDelta):
            answer.append(event.text)
        elif isinstance(event, Stats):
            stats = event
        elif isinstance(event, Finished):
            finished = event
    ctx.facts["exchange"] = {
        "thinking": "".join(thinking),
        "answer": "".join(answer),
        "stats": stats,
    }
    problems = []
    if finished is None:
        problems.append("no Finished event")
    elif finished.reason is FinishReason.ERROR:
        problems.append(f"finished with an error: {finished.error}")
    if not thinking:
        problems.append("no thinking text streamed")
    if not answer:
        problems.append("no answer text streamed")
    if stats is None:
        problems.append("no Stats event")
    summary = (
        f"{len(thinking)} thinking + {len(answer)} answer deltas, "
        f"finish {finished.reason.value if finished else None}"
    )
    if stats is not None:
        summary += (
            f", prompt {stats.prompt_tokens} tok, generated {stats.generated_tokens} tok, "
            f"ttft {stats.ttft_s:.2f}s, decode {stats.decode_tps:.1f} tok/s"
        )
    if problems:
        raise CheckFailed("; ".join(problems) + f" ({summary})")
    return summary


def check_store(ctx: Context) -> str:
    exchange = _need(ctx, "exchange")
    image = _need(ctx, "image")
    from app.store import AttachmentKind, MessageState, Store, StoredAttachment, StoredStats

    folder = ctx.workdir / "history"
    database = folder / "qwendesk.sqlite3"
    store = Store(database, folder / "attachments")
    try:
        cid = store.create_conversation("Self-test")
        copy = store.import_file(Path(image))
        attachment = StoredAttachment(AttachmentKind.IMAGE, copy, Path(image).name)
        store.add_message(cid, "user", PROMPT, attachments=(attachment,))
        reply = store.add_message(cid, "assistant", "", state=MessageState.STREAMING)
        stats = exchange["stats"]
        store.update_message(
            reply.id,
            text=exchange["answer"],
            thinking=exchange["thinking"],
            state=MessageState.COMPLETE,
            stats=StoredStats.of(stats) if stats is not None else None,
        )
    finally:
        store.close()

    # Read it back through a fresh connection, as the next launch would.
    store = Store(database, folder / "attachments")
    try:
        messages = store.messages(cid)
        hits = store.search("image")
    finally:
        store.close()
    if [m.role for m in messages] != ["user", "assistant"]:
        raise CheckFailed(f"read back roles {[m.role for m in messages]}")
    user, assistant = messages
    if user.text != PROMPT or len(user.attachments) != 1 or not user.attachments[0].path.exists():
        raise CheckFailed("the user message or its attachment did not round-trip")
    if assistant.text != exchange["answer"] or assistant.thinking != exchange["thinking"]:
        raise CheckFailed("the streamed answer did not round-trip")
    if assistant.state is not MessageState.COMPLETE:
        raise CheckFailed(f"the answer was read back as {assistant.state.value}")
    if not any(h.conversation_id == cid for h in hits):
        raise CheckFailed("full-text search did not find the conversation")
    return f"{len(messages)} messages written and read back from {database.name}, search ok"


def _need(ctx: Context, key: str):
    if key not in ctx.facts:
        raise Skipped(f"skipped: needs {key!r}, which an earlier check did not provide")
    return ctx.facts[key]


CHECKS: tuple[tuple[str, Callable[[Context], str]], ...] = (
    ("imports", check_imports),
    ("qt", check_qt),
    ("mlx", check_mlx),
    ("media", check_media),
    ("tiny_model", check_tiny_model),
    ("load", check_load),
    ("generate", check_generate),
    ("store", check_store),
)


# ------------------------------------------------------------------------------------------ runner


def run_checks(ctx: Context, names: list[str] | None = None) -> dict[str, Result]:
    results: dict[str, Result] = {}
    for name, check in CHECKS:
        if names and name not in names:
            continue
        start = time.perf_counter()
        try:
            detail = check(ctx)
            ok = True
        except (CheckFailed, Skipped) as exc:
            ok, detail = False, str(exc)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a failed check
            if isinstance(exc, KeyboardInterrupt):
                raise
            ok, detail = False, f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        results[name] = Result(ok, time.perf_counter() - start, detail)
        print(
            f"[self-test] {name}: {'ok' if ok else 'FAILED'} - {detail}",
            file=sys.stderr,
            flush=True,
        )
    return results


@contextlib.contextmanager
def stdout_to_stderr():
    """Send everything written to stdout (by Python or by native libraries) to stderr; yield the
    real stdout as a file object so the final JSON line is the only thing on it."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        real = os.fdopen(os.dup(saved), "w", encoding="utf-8", closefd=True)
        with contextlib.redirect_stdout(sys.stderr):
            yield real
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def report(results: dict[str, Result], device: str | None, started: float) -> dict:
    """The JSON line: every check, the MLX device, the app version, frozen or not, total time."""
    return {
        "ok": bool(results) and all(r.ok for r in results.values()),
        "checks": {name: r.as_json() for name, r in results.items()},
        "device": device,
        "version": app_version(),
        "frozen": is_frozen(),
        "total_seconds": round(time.perf_counter() - started, 3),
    }


def _watchdog(seconds: float, emit: Callable[[dict], None], started: float) -> threading.Timer:
    """If the checks hang (a deadlocked GPU, a stuck decoder), still print a failing line and exit."""

    def expire() -> None:
        emit(
            report(
                {"timeout": Result(False, seconds, f"no result after {seconds:.0f}s")},
                None,
                started,
            )
        )
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def run(argv: list[str] | None = None) -> int:
    """Run the self-test; returns the process exit code (0 = everything passed)."""
    parser = argparse.ArgumentParser(
        prog="QwenDesk --self-test", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--self-test", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (path on stderr)"
    )
    parser.add_argument(
        "--only", action="append", choices=[n for n, _ in CHECKS], help="run only this check"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="give up after this many seconds"
    )
    args, _unknown = parser.parse_known_args(sys.argv[1:] if argv is None else argv)

    started = time.perf_counter()
    prepare_environment()
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
        )

    with stdout_to_stderr() as real_stdout:
        lock = threading.Lock()
        emitted = False

        def emit(line: dict) -> None:
            nonlocal emitted
            with lock:
                if emitted:
                    return
                emitted = True
                real_stdout.write(json.dumps(line) + "\n")
                real_stdout.flush()

        timer = _watchdog(args.timeout, emit, started)
        try:
            workdir = Path(tempfile.mkdtemp(prefix="qwendesk-selftest-"))
        except OSError as exc:
            timer.cancel()
            failed = Result(False, 0.0, f"cannot make a temporary folder: {exc}")
            emit(report({"setup": failed}, None, started))
            real_stdout.close()
            return 1
        ctx = Context(workdir=workdir)
        try:
            results = run_checks(ctx, args.only)
        finally:
            timer.cancel()
            engine = ctx.facts.pop("engine", None)
            if engine is not None:
                with contextlib.suppress(Exception):
                    engine.unload()
            if args.keep:
                print(f"[self-test] kept {workdir}", file=sys.stderr)
            else:
                import shutil

                shutil.rmtree(workdir, ignore_errors=True)
        final = report(results, ctx.facts.get("device"), started)
        emit(final)
        real_stdout.close()
    return 0 if final["ok"] else 1


if __name__ == "__main__":
    sys.exit(run())
