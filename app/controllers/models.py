"""Model discovery, fit estimates, loading and the demo model, without widgets."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine_mlx.app_folders import FOLDERS_PREF, parse_folders
from engine_mlx.checkpoint import ModelInfo
from engine_mlx.errors import CheckpointError
from engine_mlx.inspections import InspectionCache
from engine_mlx.mtp_head import MtpMode
from engine_mlx.remote.engine import RemoteModel
from engine_mlx.settings import DEFAULT_CONTEXT_TOKENS

from ..engine_choice import EngineChoice, EngineMode, KeyFile, read_choice, save_choice
from ..operations import Operation
from ..paths import AppPaths
from ..store import Store, StoreError
from ..workers import EngineClient, LoadFailure

log = logging.getLogger(__name__)

MTP_PREF = "mtp_mode"
APP_MTP_MODES = (MtpMode.AUTO, MtpMode.OFF)  # the model settings offer these (on is for benchmarks)


@dataclass(frozen=True)
class ModelEntry:
    """A model folder in the picker: usable (``info``), or refused (``info`` None, ``refusal`` why)."""

    info: object  # engine_mlx.checkpoint.ModelInfo, None when refused
    fit: object | None  # engine_mlx.memory.FitEstimate
    is_demo: bool = False
    refusal: str | None = None  # the engine's one-line reason the folder cannot be used
    folder: Path | None = None  # the refused folder

    @property
    def path(self) -> Path:
        return Path(self.info.path) if self.info is not None else Path(self.folder)


def fit_label(fit) -> str:
    if fit is None:
        return "unknown"
    verdict = getattr(fit.verdict, "value", str(fit.verdict))
    return {"fits": "Fits", "tight": "Tight", "does_not_fit": "Does not fit"}.get(
        str(verdict).lower(), str(verdict)
    )


def discover(
    folders: list[Path], demo_dir: Path, context_tokens: int, inspections: InspectionCache
) -> list[ModelEntry]:
    """All models found in the usual places plus the user's folders (runs on a pool thread); folders
    unchanged since an earlier scan are not inspected again."""
    from engine_mlx.checkpoint import SourceKind, discover_models
    from engine_mlx.errors import CheckpointError
    from engine_mlx.memory import estimate_fit

    infos = {}
    refused = []  # Qwen3.5 folders the engine refuses, listed with the reason
    try:
        for found in discover_models(
            extra_dirs=[f for f in folders if f.exists()], inspect=inspections.inspect
        ):
            if found.ok:
                infos[Path(found.info.path).resolve()] = found.info
            elif (
                not found.other_model or found.source is SourceKind.USER
            ):  # (a folder the user added)
                refused.append(ModelEntry(None, None, refusal=found.error, folder=Path(found.path)))
    except Exception:
        log.exception("model discovery failed")
    if (demo_dir / "config.json").exists() and demo_dir.resolve() not in infos:
        try:
            infos[demo_dir.resolve()] = inspections.inspect(demo_dir)
        except CheckpointError:
            log.warning("the demo model folder %s is unusable", demo_dir)
    entries = []
    for path, info in sorted(infos.items(), key=lambda kv: kv[1].name.lower()):
        try:
            fit = estimate_fit(info, context_tokens)
        except Exception:
            fit = None
        entries.append(ModelEntry(info, fit, is_demo=path == demo_dir.resolve()))
    entries += refused
    return entries


class RefusedFolder(CheckpointError):
    """An added folder holds model folders, all refused: it is remembered so the picker lists them with
    the reason."""


def models_in(folder: Path, inspections: InspectionCache) -> list[Path]:
    """The usable model folders in ``folder`` (itself, or up to two levels below); raises ``CheckpointError``
    saying why when there is none (runs on a pool thread). The inspections are kept for the rescan after."""
    from engine_mlx.checkpoint import SearchRoot, SourceKind, discover_models
    from engine_mlx.errors import CheckpointError

    found = discover_models(
        roots=[SearchRoot(folder, SourceKind.USER)], inspect=inspections.inspect
    )
    usable = [Path(f.path) for f in found if f.ok]
    if usable:
        return usable
    if found:
        raise RefusedFolder(found[0].path, found[0].error or "it cannot be used")
    raise CheckpointError(
        folder,
        "no model here: neither this folder nor any folder up to two levels "
        "below it has a config.json",
    )


class ModelsController(QObject):
    modelsChanged = Signal(list)  # list[ModelEntry]
    loadStarted = Signal(str)  # model name
    loadProgress = Signal(str, float)
    modelLoaded = Signal(ModelInfo)
    modelUnloaded = Signal()
    serverConnecting = Signal(str)  # host:port (Settings ▸ Engine: a QwenDesk server)
    serverConnected = Signal(RemoteModel)
    engineChanged = Signal()  # Settings ▸ Engine saved a choice (read it from ``engine_choice``)
    loadFailed = Signal(str, LoadFailure)  # message, kind
    errorOccurred = Signal(str)
    demoBuilding = Signal(bool)
    severalFound = Signal(int)  # an added folder holds this many usable models: the user picks one

    def __init__(
        self, store: Store, engine: EngineClient, paths: AppPaths, parent: QObject | None = None
    ):
        super().__init__(parent)
        self.store = store
        self.engine = engine
        self.paths = paths
        self.entries: list[ModelEntry] = []
        self.loaded_info = None
        self.remote_model: RemoteModel | None = None  # in server mode
        self.key_file = KeyFile(paths.server_key)
        self.loading_path: Path | None = None
        # a rescan (e.g. a new context length) re-checks only changed folders
        self.inspections = InspectionCache()
        self.scanned = False
        engine.loadProgress.connect(self.loadProgress)
        engine.loaded.connect(self._on_loaded)
        engine.loadFailed.connect(self._on_load_failed)
        engine.unloaded.connect(self._on_unloaded)
        engine.mtpFailed.connect(self.errorOccurred)
        engine.connected.connect(self._on_connected)

    # --- preferences --------------------------------------------------------------------------
    @property
    def context_tokens(self) -> int:
        return int(self.store.get_pref("context_tokens", str(DEFAULT_CONTEXT_TOKENS)))

    def set_context_tokens(self, value: int) -> None:
        self.store.set_pref("context_tokens", str(int(value)))

    @property
    def mtp_mode(self) -> MtpMode:
        """Speculative decoding with the model's MTP head: auto (the default) or off."""
        try:
            mode = MtpMode(self.store.get_pref(MTP_PREF, MtpMode.AUTO.value))
        except ValueError:  # a value this version does not know: the default
            return MtpMode.AUTO
        return mode if mode in APP_MTP_MODES else MtpMode.AUTO

    def set_mtp_mode(self, mode: MtpMode) -> None:
        """Remember ``mode`` and apply it to the loaded model's next answers."""
        mode = MtpMode(mode)
        if mode not in APP_MTP_MODES:
            raise ValueError(f"the app offers MTP modes {[m.value for m in APP_MTP_MODES]}")
        try:
            self.store.set_pref(MTP_PREF, mode.value)
        except StoreError as error:  # applied all the same, for this session
            self.errorOccurred.emit(str(error))
        if self.loaded_info is not None:
            self.engine.use_mtp(mode)

    def user_folders(self) -> list[Path]:
        return parse_folders(self.store.get_pref(FOLDERS_PREF))

    @property
    def last_model(self) -> Path | None:
        value = self.store.get_pref("last_model")
        return Path(value) if value else None

    # --- discovery ----------------------------------------------------------------------------
    def rescan(self, then: Callable[[], None] | None = None) -> None:
        """Look for models again (on a pool thread); ``then`` runs once the list is updated."""
        folders, demo, ctx = self.user_folders(), self.paths.demo_model, self.context_tokens
        Operation(
            self,
            lambda _ctx: discover(folders, demo, ctx, self.inspections),
            partial(self._on_scanned, then=then),
            label="Looking for models",
        ).failure(self._on_scan_failed).run_in_background()

    def _on_scanned(
        self, entries: list[ModelEntry], then: Callable[[], None] | None = None
    ) -> None:
        self.entries = entries
        self.scanned = True
        log.info("found %d model folders", len(entries))
        self.modelsChanged.emit(entries)
        if then is not None:
            then()

    def _on_scan_failed(self, error: Exception) -> None:
        self.scanned = True
        self.errorOccurred.emit(f"Looking for models failed: {error}")
        self.modelsChanged.emit(self.entries)

    def add_folder(self, folder: Path | str, *, load_if_one: bool = False) -> None:
        """Remember a folder that is, or holds, model folders (the engine's own discovery decides, as
        ``python -m engine_mlx models --dir`` does) and rescan. ``load_if_one``: when the folder holds
        exactly one usable model, load it too; when it holds several, say so (``severalFound``)."""
        folder = Path(folder)

        def find(_ctx) -> list[Path]:
            return models_in(folder, self.inspections)

        def found(paths: list[Path]) -> None:
            folders = [str(p) for p in self.user_folders()]
            if str(folder) not in folders:
                folders.append(str(folder))
                try:
                    self.store.set_pref(FOLDERS_PREF, json.dumps(folders))
                except StoreError as error:
                    self.errorOccurred.emit(str(error))
            if not paths:  # all refused: listed, with the reason
                self.rescan()
            elif load_if_one and len(paths) == 1:
                self.rescan()
                self.load(paths[0])
            elif load_if_one:
                # the picker lists them
                self.rescan(then=lambda: self.severalFound.emit(len(paths)))
            else:
                self.rescan()

        def failed(error: Exception) -> None:
            if isinstance(error, RefusedFolder):
                found([])
                self.errorOccurred.emit(f"{error} The model picker lists it with the reason.")
            else:
                self.errorOccurred.emit(str(error))

        Operation(self, find, found, label="Adding the folder").failure(failed).run_in_background()

    # --- loading ------------------------------------------------------------------------------
    # --- the engine: this Mac or a QwenDesk server (Settings ▸ Engine) -------------------------------
    @property
    def engine_choice(self) -> EngineChoice:
        return read_choice(self.store)

    @property
    def server_mode(self) -> bool:
        return self.engine_choice.mode is EngineMode.SERVER

    @property
    def has_engine(self) -> bool:
        """A model is loaded here, or a server is chosen (connected or not): no first-run page."""
        return self.loaded_info is not None or self.remote_model is not None or self.server_mode

    def set_engine(self, choice: EngineChoice, key: str) -> None:
        """Remember the choice (the key in its own file) and switch to it. A bad address is refused by
        the dialog before this (``connection_for``); a disk that refuses the key is said here."""
        before = self.engine_choice
        try:
            save_choice(self.store, choice)
            if choice.mode is EngineMode.SERVER:
                self.key_file.write(key)
        except (StoreError, OSError) as error:
            self.errorOccurred.emit(f"The engine setting could not be saved: {error}")
            return
        if choice.mode is EngineMode.SERVER:
            self.connect_server()  # also when unchanged: that reconnects
        elif before.mode is EngineMode.SERVER:
            self.remote_model = None
            self.engine.use_local()
            self.reload_last()
        self.engineChanged.emit()

    def connect_server(self) -> None:
        """Use the remembered server: its model list is asked for (``serverConnected`` or ``loadFailed``)."""
        from engine_mlx.errors import ServerError

        from ..engine_choice import connection_for

        try:
            connection = connection_for(self.engine_choice, self.key_file.read())
        except ServerError as error:
            self.loadFailed.emit(str(error), LoadFailure.SERVER)
            return
        log.info("connecting to the QwenDesk server at %s", connection.host)
        self.serverConnecting.emit(connection.host)
        self.engine.use_server(connection)

    def _on_connected(self, model) -> None:
        self.remote_model = model
        self.loaded_info = None  # no local model in server mode
        self.serverConnected.emit(model)

    @property
    def context_limit(self) -> int:
        """The context the status bar measures against: the server's, else this Mac's setting."""
        remote = self.remote_model
        if remote is not None and remote.context_length:
            return remote.context_length
        return self.context_tokens

    def load(self, path: Path | str, force: bool = False) -> None:
        path = Path(path)
        if self.server_mode:  # nothing changes: the server's model stays in use
            self.errorOccurred.emit(
                "QwenDesk uses a server's model (Settings ▸ Engine); choose This Mac there to load "
                f"{path.name} here."
            )
            return
        if not path.exists():
            self.loadFailed.emit(
                f"The model folder {path} no longer exists (was it moved or deleted?).",
                LoadFailure.CHECKPOINT,
            )
            return
        self.loading_path = path
        log.info("loading %s (context %d tokens)", path, self.context_tokens)
        self.loadStarted.emit(path.name)
        self.engine.load(path, self.context_tokens, force, self.mtp_mode)

    def unload(self) -> None:
        self.engine.unload()

    def reload_last(self) -> bool:
        """On start-up: load the model used last time, if any (in server mode: connect to the
        server). Returns whether a load started."""
        if self.server_mode:
            self.connect_server()
            return True
        last = self.last_model
        if last is None:
            return False
        if not last.exists():
            self.loadFailed.emit(
                f"The model used last time, {last}, is gone (moved or deleted). Pick another model.",
                LoadFailure.CHECKPOINT,
            )
            return False
        self.load(last)
        return True

    def use_demo(self) -> None:
        """Build the tiny random-weight model once (in the background) and load it.

        It ships with an MTP head trained on its own replies to the demo's first messages, so
        speculative decoding shows real acceptance. It is built beside the target and moved in whole:
        an interrupted build leaves no half model (a folder without its head) behind."""
        target = self.paths.demo_model
        if (target / "config.json").exists():
            self.load(target)
            return
        self.demoBuilding.emit(True)

        def build(_ctx) -> Path:
            import shutil

            from engine_mlx.tiny import build_tiny_model
            from engine_mlx.tiny_mtp import train_head

            staging = target.with_name(target.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            train_head(build_tiny_model(staging))
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            return target

        def built(path) -> None:
            self.demoBuilding.emit(False)
            self.rescan()
            self.load(Path(path) if path else target)

        def failed(error: Exception) -> None:
            self.demoBuilding.emit(False)
            self.errorOccurred.emit(f"Could not build the demo model: {error}")

        Operation(self, build, built, label="Building the demo model").failure(
            failed
        ).run_in_background()

    def _on_loaded(self, info) -> None:
        self.loaded_info = info
        self.loading_path = None
        log.info("loaded %s", info.path)
        try:
            self.store.set_pref("last_model", str(info.path))
        except StoreError as error:
            self.errorOccurred.emit(str(error))
        self.modelLoaded.emit(info)

    def _on_load_failed(self, message: str, kind: LoadFailure) -> None:
        log.warning("loading failed (%s): %s", kind.value, message)
        self.loading_path = None
        if kind is LoadFailure.SERVER:  # the engine no longer answers with the earlier server
            self.remote_model = None
        self.loadFailed.emit(message, kind)

    def _on_unloaded(self) -> None:
        self.loaded_info = None
        self.remote_model = None
        self.modelUnloaded.emit()

    def is_demo(self, info) -> bool:
        try:
            return Path(info.path).resolve() == self.paths.demo_model.resolve()
        except OSError:
            return False
