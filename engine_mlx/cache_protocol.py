"""The model-cache protocol of mlx-lm and mlx-vlm, in one place.

Both libraries give every cache entry (one per layer) the same few members, and the engine uses
nothing else: ``state`` (the arrays, and in mlx-lm also scalars such as the KV offset),
``meta_state`` (mlx-vlm only: the scalars, as strings), ``from_state`` (a class method that rebuilds
an entry: ``from_state(state)`` in mlx-lm, ``from_state(state, meta_state)`` in mlx-vlm),
``nbytes``, ``size()`` (the tokens an attention cache holds; 0 for recurrent state),
``is_trimmable()`` and ``trim(n)``. An entry is never recognized by its class name: what differs
between the two libraries is told apart by whether the class has a ``meta_state``.

The one thing taken from the libraries' internals is where an entry's class lives, so a saved
snapshot can be rebuilt with the same class: only classes defined in the two cache modules below
are accepted. ``tests/test_cache_protocol.py`` pins this contract to the pinned versions.

mlx-lm's own ``save_prompt_cache``/``load_prompt_cache`` would do for mlx-lm's classes, but its
loader rebuilds every entry from mlx-lm's module, which is not where mlx-vlm's models take theirs.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable
from typing import Any

import mlx.core as mx

CACHE_MODULES = ("mlx_lm.models.cache", "mlx_vlm.models.cache")
_SCALARS = (bool, int, float, str, type(None))


# ---------------------------------------------------------------------- copies and sizes


def copy_cache(cache: list[Any]) -> list[Any]:
    """An independent copy of a cache (the live one is never changed).

    Each entry is rebuilt from its own ``state``/``meta_state`` with its arrays copied, so the copy
    holds only what the state covers (mlx-vlm's KV state is cut to the tokens held; mlx-lm's keeps
    its preallocated buffer) and later in-place updates of the live cache do not reach it. An entry
    with a ``copy()`` method of its own is copied by that."""
    copied = [_copy_entry(entry) for entry in cache]
    mx.eval([_arrays(entry.state) for entry in copied])
    return copied


def _copy_entry(entry: Any) -> Any:
    if callable(getattr(entry, "copy", None)):
        return entry.copy()
    state = _map_arrays(entry.state, mx.contiguous)
    return _rebuild(type(entry), state, _meta_state(entry))


def cache_nbytes(cache: list[Any]) -> int:
    """Bytes the cache's arrays hold, by each entry's own ``nbytes``."""
    return sum(int(entry.nbytes) for entry in cache)


def holds_tokens(cache: list[Any], tokens: int) -> bool:
    """Whether every entry that reports a length (``size()``: attention caches; recurrent state
    reports 0) holds exactly ``tokens`` tokens."""
    sizes = [int(entry.size()) for entry in cache if callable(getattr(entry, "size", None))]
    return all(size == tokens for size in sizes if size)


def can_trim(cache: list[Any]) -> bool:
    """Whether every entry can drop tokens from its end (never true with recurrent state)."""
    return bool(cache) and all(entry.is_trimmable() for entry in cache)


def trimmed_copy(cache: list[Any], tokens: int) -> list[Any]:
    """A copy of a trimmable cache without its last ``tokens`` tokens; the original is unchanged."""
    if not can_trim(cache):
        raise ValueError("this cache cannot be trimmed")
    copied = copy_cache(cache)
    for entry in copied:
        entry.trim(tokens)
    return copied


# ---------------------------------------------------------------------- saving and loading


def encode_cache(cache: list[Any]) -> tuple[list[dict], dict[str, Any]]:
    """A cache as a JSON-able layout plus named arrays (for safetensors)."""
    layout: list[dict] = []
    arrays: dict[str, Any] = {}
    for i, entry in enumerate(cache):
        cls = type(entry)
        if cls.__module__ not in CACHE_MODULES:
            raise TypeError(
                f"cannot save a cache entry of type {cls.__module__}.{cls.__qualname__}"
            )
        spec = {
            "module": cls.__module__,
            "class": cls.__qualname__,
            "state": _encode(entry.state, f"{i}", arrays),
        }
        if _has_meta_state(cls):
            spec["meta_state"] = _encode(entry.meta_state, f"{i}.meta", arrays)
        layout.append(spec)
    return layout, arrays


def decode_cache(layout: list[dict], arrays: dict[str, Any]) -> list[Any]:
    """Rebuild a cache from :func:`encode_cache`'s output; ValueError or TypeError on anything odd."""
    cache = []
    for spec in layout:
        cls = _cache_class(spec.get("module"), spec.get("class"))
        state = _decode(spec["state"], arrays)
        meta = _decode(spec["meta_state"], arrays) if "meta_state" in spec else None
        if _has_meta_state(cls) != ("meta_state" in spec):
            raise ValueError(f"{cls.__qualname__}: meta_state does not match the class's protocol")
        cache.append(_rebuild(cls, state, meta))
    return cache


def checksum(arrays: dict[str, Any], *parts: str) -> str:
    """A digest of every array (name, dtype, shape, bytes) and of ``parts`` (e.g. the token ids)."""
    h = hashlib.blake2b(digest_size=20)
    for name in sorted(arrays):
        a = mx.contiguous(arrays[name])
        mx.eval(a)
        h.update(json.dumps([name, str(a.dtype), list(a.shape)]).encode())
        if a.size:
            h.update(memoryview(a))  # type: ignore[arg-type]  # an mx.array is a buffer; its stubs omit it
    for part in parts:
        h.update(b"\x00" + part.encode())
    return h.hexdigest()


# ---------------------------------------------------------------------- helpers


def _has_meta_state(cls: type) -> bool:
    return hasattr(cls, "meta_state")


def _meta_state(entry: Any) -> Any:
    return entry.meta_state if _has_meta_state(type(entry)) else None


def _rebuild(cls: type[Any], state: Any, meta_state: Any) -> Any:
    if _has_meta_state(cls):
        return cls.from_state(state, meta_state)
    return cls.from_state(state)


def _cache_class(module: Any, name: Any) -> type:
    if module not in CACHE_MODULES or not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"unexpected cache class {module}.{name}")
    cls = getattr(importlib.import_module(module), name, None)
    if not isinstance(cls, type) or not callable(getattr(cls, "from_state", None)):
        raise TypeError(f"{module}.{name} is not a cache class")
    return cls


def _arrays(value: Any) -> list[Any]:
    if isinstance(value, mx.array):
        return [value]
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in _arrays(v)]
    return []


def _map_arrays(value: Any, fn: Callable[[mx.array], Any]) -> Any:
    if isinstance(value, mx.array):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_map_arrays(v, fn) for v in value)
    return value


def _encode(value: Any, name: str, arrays: dict[str, Any]) -> Any:
    """Nested lists/tuples of arrays and scalars as JSON: arrays by name, the rest by value."""
    if isinstance(value, mx.array):
        arrays[name] = value
        return {"array": name}
    if isinstance(value, (list, tuple)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {kind: [_encode(v, f"{name}.{j}", arrays) for j, v in enumerate(value)]}
    if isinstance(value, _SCALARS):
        return {"value": value}
    raise TypeError(f"cannot save a cache state holding {type(value).__name__}")


def _decode(spec: Any, arrays: dict[str, Any]) -> Any:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError("bad cache layout")
    ((kind, value),) = spec.items()
    if kind == "array":
        if value not in arrays:
            raise ValueError(f"missing array {value}")
        return arrays[value]
    if kind in ("list", "tuple") and isinstance(value, list):
        items = [_decode(v, arrays) for v in value]
        return tuple(items) if kind == "tuple" else items
    if kind == "value" and isinstance(value, _SCALARS):
        return value
    raise ValueError("bad cache layout")
