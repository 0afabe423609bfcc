"""The model calls rank 0 broadcasts to the other ranks, as small int32 arrays over ``mx.distributed``.

A command is a fixed-size header, then (for some) a payload whose length the header gives. Rank 0
sums its values with the zeros every other rank contributes (``all_sum``): one collective. Each
command runs to completion before the model call it announces is built, and rank 0 evaluates each
call's output before the next command: a pipeline's ``recv`` does not depend on its input's data, so
a command left lazy could be scheduled after it, and every rank would wait for another.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import mlx.core as mx

HEADER = 6  # op, then up to five arguments


class Op(enum.IntEnum):
    NEW = 1  # a fresh cache: (cache id)
    COPY = 2  # a copy of a cache: (source id, new id)
    FREE = 3  # drop caches: (count) + payload of ids
    TRIM = 4  # drop tokens from a cache's end: (cache id, tokens)
    # Run prompt tokens into a cache: (cache id, count, explicit, first position, media tokens) +
    # payload of token ids. A vision checkpoint's chunk then carries its MRoPE positions: when
    # ``explicit``, a (3 * count) payload; else ``first position`` + 0, 1, ... on every axis. With
    # ``media tokens``, two more: their places in the chunk, and their embeddings (rank 0's vision
    # tower's features), (media tokens, hidden) in the embeddings' dtype.
    PREFILL = 5
    # One decode step: (cache id, position, token) - the token may still be lazy on rank 0; the
    # position is a vision checkpoint's MRoPE position (the same on every axis).
    STEP = 6
    STOP = 7  # rank 0 is done: the followers exit


@dataclass(frozen=True)
class Command:
    op: Op
    args: tuple[int, ...]
    payload: mx.array | None = None  # (count,) int32 when the op carries one


class Broadcaster:
    """Rank 0's side: sends commands; the followers' side is :class:`Receiver`."""

    def __init__(self, group: mx.distributed.Group):
        self.group = group
        self.commands = 0  # collectives sent (headers and payloads), for the bench
        self.bytes_sent = 0

    def send(
        self,
        op: Op,
        args: Sequence[int] = (),
        *,
        lazy_arg: mx.array | None = None,
        payload: Sequence[int] | None = None,
        extra: Sequence[mx.array] = (),
    ) -> tuple[mx.array, mx.array | None]:
        """Broadcast a command; returns the summed header (and payload) as every rank sees it.

        ``lazy_arg`` (a (1,) array, e.g. a token just sampled) goes after ``args`` in the header;
        the ``extra`` arrays follow the payload, in order (the followers receive them with
        :meth:`Receiver.array`, knowing their shapes from the header)."""
        values = [int(op), *args]
        fixed = HEADER - (1 if lazy_arg is not None else 0)
        header = mx.array(values + [0] * (fixed - len(values)), dtype=mx.int32)
        if lazy_arg is not None:
            header = mx.concatenate([header, lazy_arg.reshape(1).astype(mx.int32)])
        summed = mx.distributed.all_sum(header, group=self.group, stream=mx.cpu)
        self.commands += 1
        self.bytes_sent += HEADER * 4
        body = None
        if payload is not None:
            body = mx.distributed.all_sum(
                mx.depends(mx.array(list(payload), dtype=mx.int32), summed),
                group=self.group,
                stream=mx.cpu,
            )
            self.commands += 1
            self.bytes_sent += 4 * len(payload)
        last = summed if body is None else body
        extras = []
        for array in extra:
            last = mx.distributed.all_sum(mx.depends(array, last), group=self.group, stream=mx.cpu)
            extras.append(last)
            self.commands += 1
            self.bytes_sent += array.nbytes
        mx.eval(summed, *([] if body is None else [body]), *extras)
        return summed, body


class Receiver:
    """A follower's side: waits for rank 0's next command."""

    def __init__(self, group: mx.distributed.Group):
        self.group = group

    def receive(self) -> Command:
        summed = mx.distributed.all_sum(
            mx.zeros((HEADER,), dtype=mx.int32), group=self.group, stream=mx.cpu
        )
        values = [int(v) for v in cast("list[int]", summed.tolist())]
        op = Op(values[0])
        payload = None
        if op is Op.FREE:
            payload = self._payload(summed, values[1])
        elif op is Op.PREFILL:
            payload = self._payload(summed, values[2])
        return Command(op, tuple(values[1:]), payload)

    def array(self, shape: Sequence[int], dtype: mx.Dtype = mx.int32) -> mx.array:
        """The next of the command's ``extra`` arrays (see :meth:`Broadcaster.send`)."""
        body = mx.distributed.all_sum(
            mx.zeros(tuple(shape), dtype=dtype), group=self.group, stream=mx.cpu
        )
        mx.eval(body)
        return body

    def _payload(self, after: mx.array, count: int) -> mx.array:
        body = mx.distributed.all_sum(
            mx.depends(mx.zeros((count,), dtype=mx.int32), after), group=self.group, stream=mx.cpu
        )
        mx.eval(body)
        return body
