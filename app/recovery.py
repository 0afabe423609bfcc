"""Keeping history safe: a daily backup of the database, and the two ways out of a damaged one.

A damaged database is never overwritten or deleted: it is renamed aside (with its WAL and shared-memory
files) so it can still be rescued by hand, and either the newest backup or a fresh, empty database takes
its place. No Qt here; ``app.main`` asks the user which.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from .paths import AppPaths
from .store import Store, StoreError

log = logging.getLogger(__name__)

BACKUP_EVERY_S = 24 * 3600
BACKUPS_KEPT = 3
_SIDECARS = ("", "-wal", "-shm")


def backups(paths: AppPaths) -> list[Path]:
    """Backups, newest first."""
    found = [p for p in paths.backups.glob("qwendesk-*.sqlite3") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def backup_if_due(store: Store, paths: AppPaths, now: float | None = None) -> Path | None:
    """Write a backup when the newest is older than a day; keep the newest few. Failures are logged only:
    a missing backup must not stop the app."""
    now = time.time() if now is None else now
    existing = backups(paths)
    if existing and now - existing[0].stat().st_mtime < BACKUP_EVERY_S:
        return None
    target = (
        paths.backups / f"qwendesk-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}.sqlite3"
    )
    try:
        store.backup(target)
    except StoreError as error:
        log.warning("%s", error)
        return None
    for old in backups(paths)[BACKUPS_KEPT:]:
        old.unlink(missing_ok=True)
    return target


def set_aside(database: Path) -> Path:
    """Rename a damaged database (and its -wal/-shm) to ``<name>.damaged-<time>``; returns the new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = database.with_name(f"{database.name}.damaged-{stamp}")
    n = 1
    while kept.exists():
        n += 1
        kept = database.with_name(f"{database.name}.damaged-{stamp}-{n}")
    for suffix in _SIDECARS:
        source = database.with_name(database.name + suffix)
        if source.exists():
            source.rename(kept.with_name(kept.name + suffix))
    log.warning("kept the damaged history database as %s", kept)
    return kept


def restore_backup(paths: AppPaths, backup: Path) -> Path:
    """Put the damaged database aside and a copy of ``backup`` in its place; returns where the damaged one is."""
    kept = set_aside(paths.database)
    partial = paths.database.with_name(paths.database.name + ".part")
    shutil.copyfile(backup, partial)
    partial.replace(paths.database)
    return kept


def start_fresh(paths: AppPaths) -> Path:
    """Put the damaged database aside; the next open creates an empty one. Returns where the damaged one is."""
    return set_aside(paths.database)
