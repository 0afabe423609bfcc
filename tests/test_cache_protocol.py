"""Cache snapshots through each library's own protocol, and the snapshot file's integrity checks.

The contract ``engine_mlx/cache_protocol.py`` relies on is pinned here against the installed (and
pinned) mlx-lm and mlx-vlm: which classes the loaders return for Qwen3.5, where they live, and which
protocol members they have. Every cache class of both libraries that a setting could produce
round-trips: copied (the live cache moving on leaves the copy alone), saved, loaded, trimmed.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import tomllib
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models import cache as lm_cache
from mlx_vlm.models import cache as vlm_cache

from engine_mlx import cache_protocol as cp
from engine_mlx.conversation import Conversation, Message, Role
from engine_mlx.settings import GenerationSettings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = GenerationSettings(
    thinking=False, temperature=0.0, presence_penalty=0.0, max_tokens=6, prefill_chunk=16
)


# ---------------------------------------------------------------------- the pinned contract


def _pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        m = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^;\s]+)", dep)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_the_protocol_is_pinned_to_the_installed_libraries():
    pins = _pins()
    for name in ("mlx-lm", "mlx-vlm"):
        assert importlib.metadata.version(name) == pins[name], (
            f"re-check cache_protocol.py for {name}"
        )


@pytest.mark.parametrize("model", ["vision", "text-only"])
def test_the_loaders_caches_follow_the_protocol(model, request):
    from engine_mlx.engine import Engine

    if model == "vision":
        loaded = request.getfixturevalue("engine")._loaded
        module = vlm_cache
    else:
        eng = Engine()
        eng.load(request.getfixturevalue("tiny_text_model_dir"))
        loaded = eng._loaded
        module = lm_cache
    cache = loaded.make_cache()
    # Qwen3.5: Gated-DeltaNet layers keep arrays (conv window, recurrent state), attention layers KV.
    assert {type(entry) for entry in cache} == {module.ArraysCache, module.KVCache}
    for entry in cache:
        cls = type(entry)
        assert cls.__module__ in cp.CACHE_MODULES and cls.__module__ == module.__name__
        for member in ("state", "nbytes", "size", "is_trimmable", "from_state", "empty"):
            assert hasattr(cls, member), (cls, member)
        assert not entry.is_trimmable() or callable(getattr(entry, "trim", None))
        # mlx-vlm splits scalars into meta_state and rebuilds with from_state(state, meta_state);
        # mlx-lm keeps them in state and rebuilds with from_state(state).
        assert hasattr(cls, "meta_state") == (module is vlm_cache)
    assert not cp.can_trim(cache)  # recurrent state never trims


# ---------------------------------------------------------------------- every class round-trips


def _kv(entry, tokens: int, seed: int = 0):
    mx.random.seed(seed)
    k = mx.random.normal((1, 2, tokens, 64))
    v = mx.random.normal((1, 2, tokens, 64))
    entry.update_and_fetch(k, v)
    return entry


def _arrays(entry, tokens: int, seed: int = 0):
    mx.random.seed(seed)
    entry[0] = mx.random.normal((1, 3, 24)) + (entry[0] if entry[0] is not None else 0)
    entry[1] = mx.random.normal((1, 2, 8, 8)).astype(mx.float32)
    return entry


CLASSES = [
    (lib, name, make, fill)
    for lib, module in (("mlx_lm", lm_cache), ("mlx_vlm", vlm_cache))
    for name, make, fill in (
        ("KVCache", lambda m=module: m.KVCache(), _kv),
        ("ArraysCache", lambda m=module: m.ArraysCache(size=2), _arrays),
        ("RotatingKVCache", lambda m=module: m.RotatingKVCache(max_size=64, keep=4), _kv),
        ("QuantizedKVCache", lambda m=module: m.QuantizedKVCache(group_size=32, bits=8), _kv),
    )
]


def _leaves(value):
    if isinstance(value, mx.array):
        return [
            (
                "array",
                str(value.dtype),
                tuple(value.shape),
                np.array(value.astype(mx.float32)).tobytes(),
            )
        ]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [("value", value)]


def _snapshot_of(entry):
    meta = entry.meta_state if hasattr(type(entry), "meta_state") else None
    return _leaves(entry.state), meta, entry.size(), entry.nbytes


@pytest.mark.parametrize("lib, name, make, fill", CLASSES, ids=[f"{c[0]}-{c[1]}" for c in CLASSES])
def test_every_cache_class_round_trips(lib, name, make, fill, tmp_path):
    live = fill(make(), 10)
    [copied] = cp.copy_cache([live])
    assert type(copied) is type(live)
    before = _snapshot_of(copied)
    fill(live, 3, seed=1)  # the live cache moves on (in place, for the KV classes)
    assert _snapshot_of(copied) == before
    assert cp.holds_tokens([copied], 10)

    layout, arrays = cp.encode_cache([copied])
    path = tmp_path / "c.safetensors"
    mx.save_safetensors(str(path), arrays, {"layout": json.dumps(layout)})
    loaded, meta = mx.load(str(path), return_metadata=True)
    [back] = cp.decode_cache(json.loads(meta["layout"]), loaded)
    assert type(back) is type(live)
    assert _snapshot_of(back) == before
    assert cp.checksum(loaded, "ids") == cp.checksum(arrays, "ids") != cp.checksum(arrays, "other")

    # The rebuilt entry keeps working: the same next update gives the same state as the copy.
    fill(back, 2, seed=2)
    fill(copied, 2, seed=2)
    assert _snapshot_of(back) == _snapshot_of(copied)

    if cp.can_trim([back]):
        kept = _snapshot_of(back)
        [short] = cp.trimmed_copy([back], 4)
        assert _snapshot_of(back) == kept  # a copy was trimmed, not the entry
        if back.size():  # mlx-lm's quantized cache reports no size
            assert back.size() == 12 and short.size() == 8
    else:
        with pytest.raises(ValueError):
            cp.trimmed_copy([back], 4)


def test_a_state_from_outside_the_two_libraries_is_refused(tmp_path):
    class Foreign:
        state = ()

    with pytest.raises(TypeError):
        cp.encode_cache([Foreign()])
    layout, arrays = cp.encode_cache([_kv(lm_cache.KVCache(), 3)])
    for module, cls in (
        ("os", "system"),
        ("mlx_lm.models.cache", "make_prompt_cache"),
        ("mlx_lm.models.cache", "mx.array"),
    ):
        bad = [{**layout[0], "module": module, "class": cls}]
        with pytest.raises((TypeError, ValueError)):
            cp.decode_cache(bad, arrays)


def test_store_trims_a_copy_of_a_trimmable_cache_and_keeps_the_original():
    """Attention-only caches (not Qwen3.5's) resume from a longer snapshot by trimming a copy."""
    from engine_mlx.snapshots import Snapshot, SnapshotStore

    store = SnapshotStore()
    cache = [_kv(lm_cache.KVCache(), 8), _kv(lm_cache.KVCache(), 8)]
    store.add("k", "fp", list(range(8)), Snapshot(8, cache))
    got = store.lookup("k", "fp", [0, 1, 2, 3, 4, 99, 98])
    assert got.length == 5 and all(c.size() == 5 for c in got.cache)
    assert store.lookup("k", "fp", list(range(8)) + [7]).length == 8
    assert store.lookup("k", "fp", list(range(8))).length == 7  # one token is left to decode
    stored = store._conversations["k"].entries[0].snapshot.cache
    kept = [_snapshot_of(c) for c in stored]
    resumed = store.lookup("k", "fp", list(range(9)))
    for entry in resumed.cache:
        _kv(entry, 2, seed=5)  # generation writes into the restored cache's buffers, in place
    assert [_snapshot_of(c) for c in stored] == kept and all(c.size() == 8 for c in stored)


def test_store_refuses_a_snapshot_whose_cache_does_not_hold_its_tokens():
    from engine_mlx.snapshots import Snapshot, SnapshotStore

    store = SnapshotStore()
    store.add("k", "fp", list(range(8)), Snapshot(6, [_kv(lm_cache.KVCache(), 8)]))
    assert store.lookup("k", "fp", list(range(9))) is None


# ---------------------------------------------------------------------- damaged files


@pytest.fixture(scope="module")
def saved(tiny_text_model_dir, tmp_path_factory):
    """A text-only engine, a conversation with its snapshot file, and a pristine copy of the file."""
    from engine_mlx.engine import Engine

    eng = Engine(state_dir=tmp_path_factory.mktemp("protocol-state"))
    eng.load(tiny_text_model_dir)
    convo = Conversation((Message(Role.USER, "Hello there, what is MLX?"),), id="damaged")
    events = list(eng.generate(convo, SETTINGS))
    answer = "".join(e.text for e in events if type(e).__name__ == "AnswerDelta")
    convo = convo.with_message(Message(Role.ASSISTANT, answer)).with_message(
        Message(Role.USER, "Tell me more about the fox.")
    )
    path = eng.persist("damaged")
    pristine = path.with_name("pristine.bin")
    shutil.copy(path, pristine)
    return eng, convo, path, pristine


def _flip_tensor_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    header = int.from_bytes(data[:8], "little")
    where = 8 + header + (len(data) - 8 - header) // 2
    data[where] ^= 0x10
    path.write_bytes(bytes(data))


def _flip_id(path: Path) -> None:
    arrays, meta = mx.load(str(path), return_metadata=True)
    ids = json.loads(meta["ids"])
    ids[3] += 1
    mx.save_safetensors(str(path), arrays, {**meta, "ids": json.dumps(ids)})


def _short_token_list(path: Path) -> None:
    """One token fewer, with the checksum made to match: only the length check can catch it."""
    arrays, meta = mx.load(str(path), return_metadata=True)
    ids = json.dumps(json.loads(meta["ids"])[:-1])
    checksum = cp.checksum(arrays, ids, meta["layout"])
    mx.save_safetensors(str(path), arrays, {**meta, "ids": ids, "checksum": checksum})


def _old_version(path: Path) -> None:
    arrays, meta = mx.load(str(path), return_metadata=True)
    mx.save_safetensors(str(path), arrays, {**meta, "version": "1"})


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _unchanged(path: Path) -> None:
    pass


@pytest.mark.parametrize(
    "damage",
    [_unchanged, _flip_tensor_byte, _flip_id, _short_token_list, _old_version, _truncated],
    ids=lambda f: f.__name__.strip("_"),
)
def test_a_damaged_snapshot_file_gives_a_cold_prefill(saved, damage):
    eng, convo, path, pristine = saved
    eng.snapshots.clear()  # as after a restart: the snapshot can only come from the file
    shutil.copy(pristine, path)
    damage(path)
    events = list(eng.generate(convo, SETTINGS))
    assert events[-1].reason.value != "error", events[-1]
    stats = events[-2]
    if damage is _unchanged:
        assert stats.reused_tokens > 0 and path.exists()
    else:
        assert stats.reused_tokens == 0 and stats.prefilled_tokens == stats.prompt_tokens
        assert not path.exists()  # dropped, so it is not read again
