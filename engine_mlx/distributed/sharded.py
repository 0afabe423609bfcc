"""A text model split over the ranks of an ``mx.distributed`` group, driven from rank 0.

Rank 0 loads its shard through mlx-lm's ``sharded_load`` into a :class:`ShardedModel`, which the
engine uses like any ``LoadedModel``: each model call (a fresh cache, a prompt chunk, a decode step,
a cache copy for a snapshot) is broadcast first, and every other rank replays it on its own shard
(:func:`follow`). The followers never see a prompt's text or settings: rank 0 tokenizes, samples,
applies grammars and decides when to stop, so a cancel is simply no further step.

A vision checkpoint's images run through rank 0's vision tower; each prompt chunk then carries its
MRoPE positions and its media tokens' features to the other ranks, whose shards take those positions
through ``vision.MRopeShard`` (mlx-lm's split model has no MRoPE of its own).

Each rank keeps its own layers' caches. Rank 0's cache list ends with a :class:`CacheTag`, a cache
entry of no model layer that names the followers' part: copying it (a snapshot), trimming it or
dropping it is mirrored on every rank, so a follow-up resumes on every rank from the same point.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import mlx.core as mx
import numpy as np

from engine_mlx import cache_protocol, platform
from engine_mlx.cancel import CancelToken
from engine_mlx.checkpoint import ModelInfo, inspect_checkpoint
from engine_mlx.distributed.commands import Broadcaster, Op, Receiver
from engine_mlx.distributed.ranks import DEFAULT_RANK_TIMEOUT_S
from engine_mlx.distributed.vision import MRopeShard, VisionSide, load_vision_side
from engine_mlx.errors import CheckpointError, ClusterError
from engine_mlx.mtp_head import MtpMode
from engine_mlx.runtime import LoadedModel, PromptInputs, _float32_on_cpu
from engine_mlx.runtime_imports import ensure_runtime_imported

log = logging.getLogger(__name__)

WATCHDOG_POLL_S = 0.5
EXIT_FROZEN = 3


class Parallel(enum.Enum):
    PIPELINE = "pipeline"  # each rank runs a slice of the layers, in turn
    TENSOR = "tensor"  # each rank runs a slice of every layer, all at once


def load_shard(info: ModelInfo, parallel: Parallel, group: mx.distributed.Group) -> tuple[Any, Any]:
    """This rank's shard of ``info``'s language model, and the tokenizer (every rank calls it)."""
    ensure_runtime_imported()
    inspect_checkpoint(info.path)  # the load boundary trusts no earlier check
    from mlx_lm.utils import sharded_load

    pipeline = group if parallel is Parallel.PIPELINE else None
    tensor = group if parallel is Parallel.TENSOR else None
    try:
        model, tokenizer = sharded_load(
            str(info.path), pipeline, tensor, tokenizer_config={"trust_remote_code": False}
        )
    except AssertionError as e:  # mlx-lm's check that the sizes divide by the ranks
        raise CheckpointError(
            info.path,
            f"cannot be split over {group.size()} ranks by tensor parallelism "
            f"({e}); use --parallel pipeline",
        ) from None
    except (ValueError, RuntimeError, OSError, KeyError) as e:
        raise CheckpointError(info.path, f"could not be loaded ({type(e).__name__}: {e})") from e
    if platform.cpu_backend():
        _float32_on_cpu(model)  # as a single process does, so the ranks compute what it computes
        mx.eval(model.parameters())
    return model, tokenizer


class ShardedModel(LoadedModel):
    """Rank 0's shard: the engine's model calls, each broadcast to the other ranks first.

    With ``vision`` (from :func:`vision.load_vision_side`) it takes images and videos: ``model`` is
    then called through an :class:`MRopeShard`."""

    def __init__(
        self,
        info: ModelInfo,
        model: Any,
        tokenizer: Any,
        group: mx.distributed.Group,
        parallel: Parallel,
        hosts: Sequence[str] = (),
        timeout_s: float = DEFAULT_RANK_TIMEOUT_S,
        vision: VisionSide | None = None,
    ):
        super().__init__(
            info,
            model,
            tokenizer if vision is None else vision.processor,
            is_vision=vision is not None,
        )
        self._vision_model = None if vision is None else vision.model
        self.mrope = None if vision is None else MRopeShard(model)
        self.group = group
        self.parallel = parallel
        self.hosts = tuple(hosts)  # each rank's address, for errors
        self.lost: ClusterError | None = (
            None  # set when a rank stopped answering: nothing runs after
        )
        self.timeout_s = timeout_s
        self._deadline: float | None = (
            None  # when the call in progress must be done (the watchdog's)
        )
        self._watchdog: threading.Thread | None = None
        self.channel = Broadcaster(group)
        self._cache_ids = itertools.count(1)
        self._freed: deque[int] = deque()  # caches dropped on rank 0, to drop on the others

    # ------------------------------------------------------------------ the engine's calls

    @property
    def vision_model(self) -> Any:
        return self._vision_model

    def use_head(self, head: Any, mode: Any) -> None:
        """Plain decoding: the other ranks replay rank 0's model calls one by one and know nothing of
        drafts, so a speculative round here would leave them waiting. The head is not used yet."""
        self.speculation = None
        if head is not None and mode is not MtpMode.OFF:
            log.warning("the MTP head is not used with --parallel: the ranks decode plainly")

    def check_usable(self) -> None:
        if self.lost is not None:
            raise self.lost

    def make_cache(self) -> list[Any]:
        from mlx_lm.models.cache import make_prompt_cache

        cache_id = next(self._cache_ids)
        self._send(Op.NEW, (cache_id,))
        return [*make_prompt_cache(self.model), CacheTag(self, cache_id)]

    def run_prompt(self, inputs: PromptInputs, start: int, end: int, cache: list[Any]) -> mx.array:
        local, tag = _split(cache)
        ids = inputs.ids[start:end]
        if self.mrope is None:
            _, body = self._send(Op.PREFILL, (tag.cache_id, len(ids)), payload=ids)
            assert body is not None
            logits = self.model(body[None], cache=local)[:, -1, :]
        else:
            logits = self._run_vision_prompt(inputs, start, end, local, tag)
        with self._watch():
            mx.eval(logits)  # with the collectives the followers run (a pipeline's last gather)
        return logits

    def step(self, token: mx.array, index: int, inputs: PromptInputs, cache: list[Any]) -> mx.array:
        local, tag = _split(cache)
        position = index + inputs.rope_delta
        header, _ = self._send(Op.STEP, (tag.cache_id, position), lazy_arg=token)
        if self.mrope is None:
            logits = self.model(header[-1:].reshape(1, 1), cache=local)[:, -1, :]
        else:
            logits = self.mrope(header[-1:].reshape(1, 1), local, _step_positions(position))
            logits = logits[:, -1, :]
        # Run now: the header already waited for the token, and a lost rank is reported from here.
        with self._watch():
            mx.eval(logits)
        return logits

    def stop(self) -> None:
        """Let the followers exit (rank 0 is done)."""
        self._send(Op.STOP)

    # ------------------------------------------------------------------ helpers

    def _run_vision_prompt(
        self, inputs: PromptInputs, start: int, end: int, local: list[Any], tag: CacheTag
    ) -> mx.array:
        """A vision checkpoint's prompt chunk: broadcast its ids, MRoPE positions and media tokens'
        embeddings (the vision tower runs here only), then run it on this rank's shard."""
        assert self.mrope is not None
        ids = inputs.ids[start:end]
        positions = inputs.positions[:, :, start:end]
        first = _linear_start(positions)
        media = np.nonzero(np.isin(np.asarray(ids), list(inputs.media_token_ids())))[0]
        embeds = self.with_media(self.mrope.embed(mx.array(ids)[None]), inputs, start, end)
        extra = [] if first is not None else [positions.reshape(-1).astype(mx.int32)]
        if len(media):
            places = mx.array(media.astype(np.int32))
            extra += [places, embeds[0][places]]
        args = (tag.cache_id, len(ids), int(first is None), first or 0, len(media))
        _, body = self._send(Op.PREFILL, args, payload=ids, extra=extra)
        assert body is not None
        return self.mrope(body[None], local, positions, embeds)[:, -1, :]

    def copy_tag(self, tag: CacheTag) -> CacheTag:
        new = next(self._cache_ids)
        self._send(Op.COPY, (tag.cache_id, new))
        return CacheTag(self, new)

    def trim_tag(self, tag: CacheTag, tokens: int) -> None:
        self._send(Op.TRIM, (tag.cache_id, tokens))

    def _send(
        self, op: Op, args: Sequence[int] = (), **kwargs: Any
    ) -> tuple[mx.array, mx.array | None]:
        freed = []
        while self._freed:
            freed.append(self._freed.popleft())
        with self._watch():
            if freed:
                self.channel.send(Op.FREE, (len(freed),), payload=freed)
            return self.channel.send(op, args, **kwargs)

    @contextlib.contextmanager
    def _watch(self) -> Iterator[None]:
        """Turn a lost peer (the ring backend's RuntimeError) into a ClusterError naming the others;
        every later call raises it at once. A call that outlasts ``timeout_s`` (a rank that froze
        without closing its connection) ends this process: see ``_watch_deadline``."""
        self.check_usable()
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watch_deadline, name="cluster-watchdog", daemon=True
            )
            self._watchdog.start()
        self._deadline = time.monotonic() + self.timeout_s
        try:
            yield
        except RuntimeError as exc:
            self.lost = ClusterError(
                f"The cluster lost a rank ({self._others()}: {exc}); the model cannot run "
                "until the group is started again (cluster launch restarts it)."
            )
            raise self.lost from None
        finally:
            self._deadline = None

    def _others(self) -> str:
        return (
            ", ".join(f"rank {r} at {h}" for r, h in enumerate(self.hosts) if r) or "another rank"
        )

    def _watch_deadline(self) -> None:
        """The watchdog: a collective blocked past its deadline cannot be interrupted, so the rank
        says which ranks did not answer and exits; mlx.launch then stops the group (and
        ``cluster launch --restarts`` starts it again), rather than every request waiting forever."""
        while True:
            time.sleep(WATCHDOG_POLL_S)
            deadline = self._deadline
            if deadline is not None and time.monotonic() > deadline:
                print(
                    f"error: the cluster stopped answering: no reply from {self._others()} within "
                    f"{self.timeout_s:g} s; ending rank 0 so the group can be started again",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(EXIT_FROZEN)


class CacheTag:
    """The last entry of rank 0's cache list: the other ranks' part of the same cache.

    It follows the cache protocol (``cache_protocol``) so snapshots copy it with the rest; it holds
    no arrays of its own."""

    nbytes = 0

    def __init__(self, owner: ShardedModel, cache_id: int):
        self.owner = owner
        self.cache_id = cache_id

    @property
    def state(self) -> list[Any]:
        return []

    def copy(self) -> CacheTag:
        return self.owner.copy_tag(self)

    def is_trimmable(self) -> bool:
        return True  # as far as the tag goes; the layers' own entries decide

    def trim(self, tokens: int) -> int:
        self.owner.trim_tag(self, tokens)
        return tokens

    def __del__(self) -> None:
        self.owner._freed.append(self.cache_id)


def _split(cache: list[Any]) -> tuple[list[Any], CacheTag]:
    tag = cache[-1]
    if not isinstance(tag, CacheTag):
        raise TypeError("a sharded model's cache ends with its CacheTag")
    return cache[:-1], tag


def _linear_start(positions: mx.array) -> int | None:
    """The first of MRoPE positions ``(3, 1, n)`` that count up by one on every axis (text), else
    None (an image's or a video's tokens)."""
    pos = np.asarray(positions)[:, 0, :]
    first = int(pos[0, 0])
    linear = first + np.arange(pos.shape[1])
    return first if bool((pos == linear[None]).all()) else None


def _chunk_positions(first: int, count: int) -> mx.array:
    return mx.broadcast_to(
        mx.arange(first, first + count, dtype=mx.int32)[None, None], (3, 1, count)
    )


def _step_positions(position: int) -> mx.array:
    """A decode step's MRoPE position, as one process places it."""
    return mx.full((3, 1, 1), position, dtype=mx.int32)


def _follow_prefill(
    receiver: Receiver, vision: MRopeShard, ids: mx.array, args: tuple[int, ...], cache: list[Any]
) -> mx.array:
    """A follower's run of a vision checkpoint's prompt chunk: the positions and media embeddings
    rank 0 sent after the ids (see ``Op.PREFILL``)."""
    count, explicit, first, media = args[1], args[2], args[3], args[4]
    if explicit:
        positions = receiver.array((3 * count,)).reshape(3, 1, count)
    else:
        positions = _chunk_positions(first, count)
    embeds = vision.embed(ids)
    if media:
        places = receiver.array((media,))
        flat = embeds[0]
        flat[places] = receiver.array((media, embeds.shape[-1]), embeds.dtype)
        embeds = flat[None]
    return vision(ids, cache, positions, embeds)


def follow(model: Any, group: mx.distributed.Group, vision: MRopeShard | None = None) -> None:
    """A follower's loop: replay rank 0's model calls on this rank's shard until it stops (a vision
    checkpoint's shard through ``vision``)."""
    from mlx_lm.models.cache import make_prompt_cache

    receiver = Receiver(group)
    caches: dict[int, list[Any]] = {}
    while True:
        command = receiver.receive()
        op, args = command.op, command.args
        if op is Op.STOP:
            return
        if op is Op.NEW:
            caches[args[0]] = make_prompt_cache(model)
        elif op is Op.COPY:
            caches[args[1]] = cache_protocol.copy_cache(caches[args[0]])
        elif op is Op.FREE:
            assert command.payload is not None
            for cache_id in cast("list[int]", command.payload.tolist()):
                caches.pop(int(cache_id), None)
        elif op is Op.TRIM:
            for entry in caches[args[0]]:
                entry.trim(args[1])
        elif op is Op.PREFILL:
            assert command.payload is not None
            cache = caches[args[0]]
            ids = command.payload[None]
            if vision is None:
                out = model(ids, cache=cache)
            else:
                out = _follow_prefill(receiver, vision, ids, args, cache)
            mx.eval(out[:, -1, :], [c.state for c in cache])
            mx.clear_cache()
        elif op is Op.STEP:
            cache = caches[args[0]]
            token = mx.array([[args[-1]]])
            if vision is None:
                out = model(token, cache=cache)
            else:
                out = vision(token, cache, _step_positions(args[1]))
            mx.eval(out[:, -1, :], [c.state for c in cache])


class ClusterLoader:
    """The engine's model loader on rank 0 of a group: loads rank 0's shard as a ShardedModel."""

    def __init__(
        self,
        parallel: Parallel,
        group: mx.distributed.Group,
        hosts: Sequence[str] = (),
        timeout_s: float = DEFAULT_RANK_TIMEOUT_S,
    ):
        self.parallel = parallel
        self.group = group
        self.hosts = tuple(hosts)
        self.timeout_s = timeout_s
        self.ranks = group.size()
        self.loaded: ShardedModel | None = None

    def __call__(
        self,
        info: ModelInfo,
        *,
        progress: Callable[[float], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> LoadedModel:
        model, tokenizer = load_shard(info, self.parallel, self.group)
        vision = None
        if info.is_vision:  # rank 0 alone runs the vision tower
            try:
                vision = load_vision_side(info.path, float32=platform.cpu_backend())
            except (ValueError, RuntimeError, OSError, KeyError) as e:
                raise CheckpointError(
                    info.path, f"could not be loaded ({type(e).__name__}: {e})"
                ) from e
        if progress is not None:
            progress(1.0)
        self.loaded = ShardedModel(
            info,
            model,
            tokenizer,
            self.group,
            self.parallel,
            self.hosts,
            self.timeout_s,
            vision=vision,
        )
        return self.loaded

    def stop(self) -> None:
        if self.loaded is not None and self.loaded.lost is None:
            self.loaded.stop()
