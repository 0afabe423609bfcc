"""Downloads and vision grafts for the app: engine operations run on pool threads, reported as signals.

One :class:`Transfer` per operation (a repo download, or "add vision" to one model folder) holds its
state; the views only read transfers and call the controller. Nothing here touches the network until
the user starts a download, asks for sizes, or checks/adds vision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

from PySide6.QtCore import QObject, Signal, Slot

from ..operations import OpContext, Operation

log = logging.getLogger(__name__)


class TransferState(str, Enum):
    PLANNING = "planning"
    READY = "ready"  # planned; waiting for the user's go (add vision)
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TransferKind(str, Enum):
    DOWNLOAD = "download"
    ADD_VISION = "add_vision"


@dataclass(frozen=True)
class Transfer:
    key: str  # the repo id (download) or the model folder (add vision)
    kind: TransferKind
    title: str
    state: TransferState
    done_bytes: int = 0
    total_bytes: int = 0
    rate_bps: float = 0.0
    eta_s: float | None = None
    message: str = ""  # the size summary, the error, or the finished folder
    result: Path | None = None

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 0.0


class DownloadsController(QObject):
    catalogChanged = Signal(list)  # list[engine_mlx.hub.catalog.CatalogEntry]
    transferChanged = Signal(Transfer)
    modelAdded = Signal(str)  # a new model folder (a download's snapshot, a grafted folder)
    errorOccurred = Signal(str)

    def __init__(
        self,
        cache_dir: Path | None = None,
        catalog: list | None = None,
        parent: QObject | None = None,
    ):
        super().__init__(parent)
        from engine_mlx.hub.catalog import load_catalog

        self.cache_dir = cache_dir
        self.catalog = load_catalog() if catalog is None else list(catalog)
        self.transfers: dict[str, Transfer] = {}
        self._jobs: dict[
            str, object
        ] = {}  # key -> Download (pause/cancel) or the graft's Operation
        self._plans: dict[str, object] = {}  # model folder -> GraftPlan
        self._progressed.connect(self._apply)
        self._find_paused()

    # --- state ---------------------------------------------------------------------------------
    def _set(self, transfer: Transfer) -> None:
        self.transfers[transfer.key] = transfer
        self.transferChanged.emit(transfer)

    def _update(self, key: str, **changes) -> None:
        if key in self.transfers:
            self._set(replace(self.transfers[key], **changes))

    def free_space(self) -> tuple[int, Path]:
        from engine_mlx.hf_cache import cache_root
        from engine_mlx.hub.download import free_space

        folder = self.cache_dir or cache_root()
        return free_space(folder), folder

    # --- catalog -------------------------------------------------------------------------------
    def refresh_catalog(self) -> None:
        """Sizes from the Hub (a user action: the dialog's button)."""
        from engine_mlx.hub.catalog import refresh

        entries = list(self.catalog)
        self._run(
            lambda _ctx: refresh(entries),
            self._catalog_refreshed,
            lambda e: self.errorOccurred.emit(str(e)),
        )

    def _catalog_refreshed(self, entries: list) -> None:
        self.catalog = entries
        self.catalogChanged.emit(entries)

    # --- downloads -----------------------------------------------------------------------------
    def download(self, repo_id: str, revision: str = "main") -> None:
        from engine_mlx.hub.download import Download

        current = self.transfers.get(repo_id)
        if current and current.state in (TransferState.RUNNING, TransferState.PLANNING):
            return
        job = Download(repo_id, revision, self.cache_dir)
        self._jobs[repo_id] = job
        self._set(
            Transfer(
                repo_id,
                TransferKind.DOWNLOAD,
                repo_id,
                TransferState.RUNNING,
                current.done_bytes if current else 0,
                current.total_bytes if current else 0,
            )
        )

        def work(_ctx: OpContext) -> Path:
            plan = job.plan()
            self._update_threadsafe(
                repo_id, done_bytes=plan.have_bytes, total_bytes=plan.total_bytes
            )
            return job.run(
                plan,
                on_progress=lambda p: self._update_threadsafe(
                    repo_id,
                    done_bytes=p.done_bytes,
                    total_bytes=p.total_bytes,
                    rate_bps=p.rate_bps,
                    eta_s=p.eta_s,
                ),
            )

        self._run(
            work, lambda path: self._finished(repo_id, path), lambda e: self._failed(repo_id, e)
        )

    def pause(self, key: str) -> None:
        job = self._jobs.get(key)
        if hasattr(job, "pause"):
            job.pause()

    def resume(self, key: str) -> None:
        transfer = self.transfers.get(key)
        if (
            transfer
            and transfer.kind is TransferKind.DOWNLOAD
            and transfer.state
            in (TransferState.PAUSED, TransferState.FAILED, TransferState.CANCELLED)
        ):
            self.download(key)

    def cancel(self, key: str) -> None:
        job = self._jobs.get(key)
        if job is not None and hasattr(job, "cancel"):
            job.cancel()
        transfer = self.transfers.get(key)
        if transfer and transfer.state in (
            TransferState.PAUSED,
            TransferState.READY,
            TransferState.FAILED,
        ):
            if transfer.kind is TransferKind.DOWNLOAD:
                from engine_mlx.hub.download import discard_partials

                discard_partials(key, self.cache_dir)
            self._plans.pop(key, None)
            self._update(
                key, state=TransferState.CANCELLED, message="Cancelled.", done_bytes=0, rate_bps=0.0
            )

    def _find_paused(self) -> None:
        """Downloads interrupted in an earlier session (partial files in the cache), found offline."""
        from engine_mlx.hub.download import paused_bytes

        for entry in self.catalog:
            have = paused_bytes(entry.repo, self.cache_dir)
            if have is not None:
                message = "Paused in an earlier session; Resume continues it."
                self._set(
                    Transfer(
                        entry.repo,
                        TransferKind.DOWNLOAD,
                        entry.repo,
                        TransferState.PAUSED,
                        have,
                        entry.size_bytes or 0,
                        message=message,
                    )
                )

    # --- add vision ----------------------------------------------------------------------------
    def proposed_release(self, model_dir: Path) -> str:
        from engine_mlx.errors import EngineError
        from engine_mlx.hub.graft import propose_release

        try:
            return propose_release(Path(model_dir)) or ""
        except (EngineError, OSError, ValueError):
            return ""

    def known_vision_size(self, model_dir: Path) -> int | None:
        plan = self._plans.get(str(model_dir))
        return plan.fetch_bytes if plan is not None else None

    def plan_vision(self, model_dir: Path, repo_id: str, mtp: bool = False) -> None:
        """Read the release's headers (small requests) and say what the graft would download."""
        from engine_mlx.hub.graft import plan_graft

        key = str(model_dir)
        self._set(
            Transfer(
                key,
                TransferKind.ADD_VISION,
                f"Add vision to {Path(model_dir).name}",
                TransferState.PLANNING,
                message=f"Reading {repo_id}…",
            )
        )

        def planned(plan) -> None:
            self._plans[key] = plan
            self._update(
                key,
                state=TransferState.READY,
                total_bytes=plan.fetch_bytes,
                message=f"Downloads {plan.summary()} from {repo_id}, into {plan.output_dir}",
            )

        self._run(
            lambda _ctx: plan_graft(model_dir, repo_id, mtp=mtp),
            planned,
            lambda e: self._failed(key, e),
        )

    def add_vision(self, model_dir: Path) -> None:
        """Run a planned graft."""
        from engine_mlx.hub.graft import run_graft

        key = str(model_dir)
        plan = self._plans.get(key)
        if plan is None:
            return
        self._update(key, state=TransferState.RUNNING, done_bytes=0)

        def work(ctx: OpContext) -> Path:
            return run_graft(
                plan,
                cancelled=ctx.cancelled,
                on_progress=lambda p: self._update_threadsafe(
                    key, done_bytes=p.done_bytes, total_bytes=p.total_bytes, message=p.stage
                ),
            )

        task = self._run(
            work, lambda path: self._finished(key, path), lambda e: self._failed(key, e)
        )
        self._jobs[key] = task

    # --- plumbing ------------------------------------------------------------------------------
    _progressed = Signal(str, dict)

    def _update_threadsafe(self, key: str, **changes) -> None:
        """From a pool thread: the change reaches the GUI thread through a queued signal."""
        self._progressed.emit(key, changes)

    @Slot(str, dict)
    def _apply(self, key: str, changes: dict) -> None:
        self._update(key, **changes)

    def _run(self, fn, on_done, on_failed) -> Operation:
        return (
            Operation(self, fn, on_done, label="The transfer")
            .failure(on_failed)
            .run_in_background()
        )

    def _finished(self, key: str, path) -> None:
        self._jobs.pop(key, None)
        self._plans.pop(key, None)
        t = self.transfers.get(key)
        self._update(
            key,
            state=TransferState.DONE,
            done_bytes=t.total_bytes if t else 0,
            rate_bps=0.0,
            eta_s=0.0,
            result=Path(path),
            message=f"Ready: {path}",
        )
        self.modelAdded.emit(str(path))

    def _failed(self, key: str, error: Exception) -> None:
        from engine_mlx.errors import EngineError
        from engine_mlx.hub.network import Cancelled, Paused

        self._jobs.pop(key, None)
        if isinstance(error, Cancelled):
            paused = isinstance(error, Paused)
            if not paused:
                self._plans.pop(key, None)
            self._update(
                key,
                state=TransferState.PAUSED if paused else TransferState.CANCELLED,
                rate_bps=0.0,
                eta_s=None,
                message=str(error),
            )
            return
        if not isinstance(error, EngineError):
            log.error("transfer %s failed", key, exc_info=error)
        message = (
            str(error) if isinstance(error, EngineError) else f"{type(error).__name__}: {error}"
        )
        self._update(key, state=TransferState.FAILED, rate_bps=0.0, eta_s=None, message=message)
