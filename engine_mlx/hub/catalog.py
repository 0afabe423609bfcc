"""The models QwenDesk offers to download (``catalog.json``), with sizes from the Hub when online."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib import resources

from engine_mlx.hub.network import HubError, online
from engine_mlx.hub.remote import repo_files


@dataclass(frozen=True)
class CatalogEntry:
    repo: str
    title: str
    vision: bool
    size_bytes: int | None  # from the Hub when refreshed, else the catalog's estimate
    exact: bool = False  # True once the size came from the Hub's file list
    error: str | None = None  # why a refresh failed for this repo


def _data() -> dict:
    return json.loads(
        resources.files("engine_mlx.hub").joinpath("catalog.json").read_text(encoding="utf-8")
    )


def load_catalog() -> list[CatalogEntry]:
    """The catalog as shipped: no network."""
    return [
        CatalogEntry(
            m["repo"],
            m["title"],
            bool(m.get("vision")),
            int(m["approx_gb"] * 1e9) if m.get("approx_gb") else None,
        )
        for m in _data()["models"]
    ]


def refresh(entries: list[CatalogEntry]) -> list[CatalogEntry]:
    """Each entry with its size summed from the Hub's file list (one request per repo)."""
    out = []
    with online():
        for e in entries:
            try:
                out.append(
                    replace(e, size_bytes=repo_files(e.repo).total_bytes, exact=True, error=None)
                )
            except HubError as exc:
                out.append(replace(e, error=str(exc)))
    return out


def release_for_config(config: dict) -> str | None:
    """The original release with this model's architecture and sizes (expert-pruned builds included)."""
    text = config.get("text_config") or config
    for r in _data()["releases"]:
        if (
            r["model_type"] == config.get("model_type")
            and r["hidden_size"] == text.get("hidden_size")
            and r["num_hidden_layers"] == text.get("num_hidden_layers")
            and text.get("num_experts", 0) <= r.get("num_experts", 0)
        ):
            return r["repo"]
    return None
