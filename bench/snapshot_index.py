"""Which snapshot index serves follow-ups better: ours (``engine_mlx.snapshots.SnapshotStore``) or mlx-lm's
``LRUPromptCache``, under the same byte budget, on the same real caches.

Issue 16 asked whether mlx-lm's ``LRUPromptCache`` (a token trie with an LRU, as ``mlx_lm.server`` uses)
could be our snapshot index. Both indexes get the same workload: several chats used in turn, as a user
mostly stays in one and now and then switches to another, each turn's prompt extending the last (the answer and a new message), and every
fourth turn an edit of the last message (a branch). Every turn looks up its prompt, prefills the rest on
the tiny Qwen3.5 (text-only conversion through mlx-lm: Gated-DeltaNet and attention layers, so the cache
cannot be trimmed back, as on the real model), then stores a snapshot at the end of the prompt.

Printed: the prompt tokens each index made the model prefill (the cost a user waits for), the tokens an
unbounded index would, and each index's median lookup time (find + copy out). The budget holds about
three chats' newest snapshots, so eviction decides. The run is repeated with every turn cut short and
then continued (Continue looks up the very tokens it stored): ours keeps the next token's logits with
such a snapshot; ``LRUPromptCache`` has no place for them, and a recurrent state cannot be trimmed back
one token to recompute them, so its exact hit still means a cold prefill.

Run: MLX_DISABLE_COMPILE=1 .venv/bin/python bench/snapshot_index.py [--chats 6] [--turns 6] [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLX_DISABLE_COMPILE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FINGERPRINT = "tiny"


def workload(chats: int, turns: int, seed: int = 0) -> list[tuple[str, list[int]]]:
    """(chat, prompt token ids) for ``chats`` x ``turns`` turns: the user mostly stays in a chat and now
    and then switches to another (3 times in 4 the next turn is in the same chat)."""
    rng = random.Random(seed)
    prompts: dict[str, list[int]] = {f"chat{c}": [] for c in range(chats)}
    done = dict.fromkeys(prompts, 0)
    order: list[tuple[str, list[int]]] = []
    name = "chat0"
    while len(order) < chats * turns:
        if done[name] >= turns or rng.random() >= 0.75:
            name = rng.choice([n for n in prompts if done[n] < turns and n != name] or [name])
        prompt = prompts[name]
        if done[name] % 4 == 3:  # the user edits the last message: a branch off the turn before
            prompt = prompt[: len(prompt) - 40]
        # the answer so far and the new message
        new = [rng.randrange(1000, 3000) for _ in range(40)]
        prompts[name] = prompt + new
        done[name] += 1
        order.append((name, list(prompts[name])))
    return order


class Ours:
    def __init__(self, budget: int):
        from engine_mlx.snapshots import SnapshotStore

        self.store = SnapshotStore(budget_bytes=budget)

    def lookup(self, chat: str, ids: list[int]):
        found = self.store.lookup(chat, FINGERPRINT, ids)
        return (found.cache, found.length) if found else (None, 0)

    def add(self, chat: str, ids: list[int], cache: list, logits=None) -> None:
        from engine_mlx.snapshots import snapshot_cache

        snapshot = snapshot_cache(cache, len(ids))
        snapshot.logits = logits  # the end of a turn cut short keeps the next token's logits
        self.store.add(chat, FINGERPRINT, ids, snapshot)


class MlxLm:
    """``LRUPromptCache`` used as mlx_lm.server does: one trie for all chats, keyed by the model."""

    def __init__(self, budget: int):
        from mlx_lm.models.cache import LRUPromptCache

        self.index = LRUPromptCache(max_size=1 << 30, max_bytes=budget)

    def lookup(self, chat: str, ids: list[int]):
        cache, rest = self.index.fetch_nearest_cache(FINGERPRINT, ids)
        if cache is None:
            return None, 0
        if not rest:  # the whole prompt, but no logits to decode from, and recurrent state cannot
            return None, 0  # be trimmed back one token: the turn is prefilled cold
        return cache, len(ids) - len(rest)

    def add(self, chat: str, ids: list[int], cache: list, logits=None) -> None:
        from engine_mlx.cache_protocol import copy_cache

        self.index.insert_cache(FINGERPRINT, list(ids), copy_cache(cache))


def run(index, turns, model, make_cache, *, cut: bool = False) -> tuple[int, list[float]]:
    """Each turn: look up, prefill the rest, keep a snapshot. ``cut``: each turn was cut short and
    the snapshot kept with its logits; the turn is then looked up again, as Continue does."""
    import mlx.core as mx

    prefilled, lookups = 0, []
    for chat, ids in turns:
        start = time.perf_counter()
        cache, served = index.lookup(chat, ids)
        if cache is not None:
            mx.eval([c.state for c in cache])
        lookups.append(time.perf_counter() - start)
        if cache is None:
            cache, served = make_cache(), 0
        logits = None
        if served < len(ids):
            logits = model(mx.array(ids[served:])[None], cache=cache)[:, -1, :]
            mx.eval(logits, [c.state for c in cache])
        prefilled += len(ids) - served
        index.add(chat, ids, cache, logits if cut else None)
        if cut:
            cache, served = index.lookup(chat, ids)
            prefilled += len(ids) - served
    return prefilled, lookups


def ideal(turns) -> int:
    """Tokens an unbounded index prefills: each prompt past the longest earlier prompt it extends."""
    seen: list[list[int]] = []
    total = 0
    for _chat, ids in turns:
        best = max((len(s) for s in seen if len(s) < len(ids) and ids[: len(s)] == s), default=0)
        total += len(ids) - best
        seen.append(ids)
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chats", type=int, default=6)
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help="3 chats, 3 turns: CI checks it runs")
    args = ap.parse_args()
    if args.quick:
        args.chats, args.turns = 3, 3

    from mlx_lm import load

    from engine_mlx.cache_protocol import cache_nbytes
    from engine_mlx.tiny import build_tiny_model

    folder = build_tiny_model(
        Path(tempfile.mkdtemp(prefix="qwendesk-index-")) / "tiny", vision=False
    )
    model, _ = load(str(folder))[:2]
    from mlx_lm.models.cache import make_prompt_cache

    def make_cache():
        return make_prompt_cache(model)

    turns = workload(args.chats, args.turns)
    # the budget: three chats' snapshots at their final length
    probe = make_cache()
    import mlx.core as mx

    model(mx.array(turns[-1][1])[None], cache=probe)
    mx.eval([c.state for c in probe])
    budget = 3 * cache_nbytes(probe)
    print(
        f"workload: {args.chats} chats x {args.turns} turns, {sum(len(t) for _, t in turns):,} prompt tokens; "
        f"budget {budget / 1024:,.0f} KiB (three chats' newest snapshots)"
    )
    print(f"an unbounded index would prefill {ideal(turns):,} tokens")
    results = {}
    for name, make in (("ours (SnapshotStore)", Ours), ("mlx-lm LRUPromptCache", MlxLm)):
        prefilled, lookups = run(make(budget), turns, model, make_cache)
        resumed, _ = run(make(budget), turns, model, make_cache, cut=True)
        results[name] = (prefilled, resumed)
        print(
            f"{name}: prefilled {prefilled:,} tokens, {resumed:,} when every turn is cut short and "
            f"continued; lookup median {statistics.median(lookups) * 1e3:.2f} ms"
        )
    (ours, ours_cut), (theirs, theirs_cut) = results.values()
    print(
        f"tokens prefilled, mlx-lm / ours: {theirs / ours:.2f} x for follow-ups, "
        f"{theirs_cut / ours_cut:.2f} x with Continue"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
