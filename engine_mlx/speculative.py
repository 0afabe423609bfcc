"""Speculative decoding with the model's MTP head: draft k tokens, verify them in one forward, keep
the prefix the model agrees with.

The drafter is mlx-vlm's Qwen3.5 MTP drafter (``qwen3_5_mtp``): it shares the model's embeddings
and output head, and drafts from the model's last hidden state. Each round feeds ``[b, d1..dk]``
(``b``: the token the model picked last, not yet in the cache; ``d``: the drafts) through the model
at once; the model's own pick after each position is sampled exactly as plain decoding samples it
(the same logits processors, the same sampler), and the drafts are kept while they equal it. So
greedy output is the plain output, and with sampling every token is still drawn from the model's own
distribution (a draft is kept exactly when the model's sample equals it: the rule that keeps the
target distribution for a deterministic drafter).

A refused draft must leave the cache as if only the kept tokens had been fed. On a vision checkpoint
(mlx-vlm's model) the round is verified by mlx-vlm's exact speculative verifier
(``speculative_verify=True``): its caches record the Gated-DeltaNet state after every token fed, and
``commit_speculative_round`` keeps the agreeing prefix without a re-run (it also runs the recurrence
token by token, where mlx-vlm's ordinary multi-token forward pads a 64-token chunked scan on CPU).
mlx-lm's text-only caches keep no such record: there the round runs the model layer by layer and
keeps each Gated-DeltaNet layer's input, and a refused draft trims the attention caches and re-runs
only those layers' recurrence over the kept tokens' inputs (not the whole model: no attention, no
experts).

``auto`` times plain steps and rounds and drafts only while a round's tokens come faster than plain
decoding's. When a window of rounds looks slower, it first times a few plain steps again (the pace it
compared with may be stale: the machine may have slowed since), and judges the rounds against that;
if they still do not pay, it decodes plainly and probes again with one round after a pause that
doubles each time the probe does not pay.

Every mlx-vlm member used here is named in tests/test_speculative.py's and
tests/test_upstream_contract.py's contract tests.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import mlx.core as mx

from engine_mlx.mtp_head import MtpHead, MtpMode, MtpSource
from engine_mlx.runtime_imports import ensure_runtime_imported

MAX_DRAFTS = 4  # tokens drafted per round at most
# auto: drafting is off for this many plain tokens after it did not pay, then probed again with one
# round; each probe that does not pay doubles the pause (up to MAX_PAUSE_TOKENS).
PAUSE_TOKENS = 64
MAX_PAUSE_TOKENS = 4096
# auto: plain steps timed before the first round, and again before a window that looks slow is
# judged; rounds timed before judging them (the first round after drafting starts is judged at once
# when its drafts were all refused: it cannot have paid); the rounds judged together (a few refused
# rounds among good ones do not stop drafting); the plain steps whose median is plain decoding's pace.
PLAIN_WARMUP = 3
ROUND_WARMUP = 3
WINDOW_ROUNDS = 8
PLAIN_WINDOW = 8
# A plain step is timed from the one before it once this many single-token steps ran in a row: the
# first intervals after a prefill or a round also hold their wait for it (steps are queued ahead).
STEADY_STEPS = 2
# auto drafts on while rounds write tokens at least this many times as fast as plain decoding (measured).
PAYS = 1.0


def load_drafter(model: Any, head: MtpHead, *, float32: bool = False) -> Any:
    """mlx-vlm's drafter for ``head``, bound to the loaded ``model`` (its embeddings and head)."""
    ensure_runtime_imported()
    from mlx_vlm.speculative.drafters import load_drafter as vlm_load_drafter

    drafter: Any
    drafter, kind = vlm_load_drafter(
        str(head.path), kind="mtp" if head.source is not MtpSource.EMBEDDED else None
    )
    if kind != "mtp":
        raise ValueError(f"{head.path} holds a {kind} drafter, not an MTP head")
    if float32:
        from mlx.utils import tree_map

        drafter.update(
            tree_map(
                lambda p: p.astype(mx.float32) if p.dtype in (mx.bfloat16, mx.float16) else p,
                drafter.parameters(),
            )
        )
    mx.eval(drafter.parameters())
    drafter.bind(model)
    return drafter


class TargetForward:
    """The model run over a few tokens, giving its last hidden states and logits: what the drafter
    drafts from and what the picks are sampled from. mlx-lm's text models and mlx-vlm's language
    models both end in a final norm and an output head over the same hidden state."""

    def __init__(self, model: Any, is_vision: bool):
        self.is_vision = is_vision
        self.lm = model.language_model
        # mlx-vlm's model verifies a round with its exact speculative verifier (rollback without a
        # re-run); mlx-lm's caches cannot record a round, so it is run layer by layer (record).
        self.transactional = is_vision

    def _positions(self, index: int, n: int, rope_delta: int) -> mx.array:
        pos = mx.arange(index, index + n, dtype=mx.int32) + rope_delta
        return mx.broadcast_to(pos[None, None], (3, 1, n))

    def __call__(
        self, ids: mx.array, index: int, rope_delta: int, cache: list[Any]
    ) -> tuple[mx.array, mx.array]:
        """(hidden (1, L, H), logits (1, L, V)) for tokens ``ids`` (shape (L,)) at positions from ``index``."""
        tokens = ids.reshape(1, -1)
        if self.is_vision:
            pos = self._positions(index, tokens.shape[1], rope_delta)
            out = self.lm(tokens, cache=cache, position_ids=pos, return_hidden=True)
            return out.hidden_states[-1], out.logits
        hidden = self.lm.model(tokens, cache)
        return hidden, self._logits(hidden)

    def logits(self, ids: mx.array, index: int, rope_delta: int, cache: list[Any]) -> mx.array:
        """As a call, the logits alone: the model's own forward, as plain decoding runs it."""
        tokens = ids.reshape(1, -1)
        if self.is_vision:
            pos = self._positions(index, tokens.shape[1], rope_delta)
            return self.lm(tokens, cache=cache, position_ids=pos).logits
        return self.lm(tokens, cache=cache)

    def _logits(self, hidden: mx.array) -> mx.array:
        if self.lm.args.tie_word_embeddings:
            return self.lm.model.embed_tokens.as_linear(hidden)
        return self.lm.lm_head(hidden)

    def record(self, ids: mx.array, cache: list[Any]) -> tuple[mx.array, mx.array, list[Any]]:
        """As a call on a text-only (mlx-lm) model, run layer by layer as its own forward runs
        them, also giving each Gated-DeltaNet layer's input (None for the other layers): what
        :meth:`keep_recorded` re-runs the recurrence over."""
        from mlx_lm.models.base import create_attention_mask, create_ssm_mask

        text = self.lm.model
        h = text.embed_tokens(ids.reshape(1, -1))
        fa_mask = create_attention_mask(h, cache[text.fa_idx])
        ssm_mask = create_ssm_mask(h, cache[text.ssm_idx])
        inputs: list[Any] = []
        for layer, entry in zip(text.layers, cache, strict=True):
            inputs.append(h if layer.is_linear else None)
            h = layer(h, mask=ssm_mask if layer.is_linear else fa_mask, cache=entry)
        hidden = text.norm(h)
        return hidden, self._logits(hidden), inputs

    def keep_recorded(self, cache: list[Any], mark: list[Any], inputs: list[Any], n: int) -> None:
        """Leave the cache as if only the first ``n`` tokens of a :meth:`record` call had been fed
        (``mark``: the cache before it): attention caches are trimmed, and each Gated-DeltaNet
        layer's state is put back and its recurrence re-run over those tokens' recorded inputs."""
        for layer, entry, where, h in zip(self.lm.model.layers, cache, mark, inputs, strict=True):
            if entry.is_trimmable():
                entry.trim(entry.offset - (where + n))
            else:
                entry.state = _lists_copied(where)
                layer.linear_attn(layer.input_layernorm(h[:, :n]), None, entry)

    def verify(
        self, ids: mx.array, index: int, rope_delta: int, cache: list[Any]
    ) -> tuple[mx.array, mx.array, Any]:
        """As a call, through mlx-vlm's exact speculative verifier (vision checkpoints): also the
        round's cache transaction, which :func:`commit` ends keeping any prefix of ``ids``."""
        tokens = ids.reshape(1, -1)
        pos = self._positions(index, tokens.shape[1], rope_delta)
        out = self.lm(
            tokens, cache=cache, position_ids=pos, speculative_verify=True, return_hidden=True
        )
        return out.hidden_states[-1], out.logits, out.gdn_states

    def commit(self, cache: list[Any], transaction: Any, kept: int, fed: int) -> None:
        """Keep the first ``kept`` of the ``fed`` tokens a :meth:`verify` call fed (its cache
        transaction selects the recorded state after them; nothing is re-run)."""
        from mlx_vlm.speculative.cache_state import commit_speculative_round

        commit_speculative_round(self.lm, cache, transaction, kept - 1, fed)

    @staticmethod
    def abort(transaction: Any) -> None:
        """Restore the cache a :meth:`verify` call started from (an error inside a round)."""
        from mlx_vlm.speculative.cache_state import abort_speculative_round

        abort_speculative_round(transaction)


def _lists_copied(value: Any) -> Any:
    """``value`` with its (nested) lists and tuples copied: a recurrent cache's state holds a list the
    layers assign new arrays into (the arrays themselves are never written in place)."""
    if isinstance(value, list | tuple):
        return type(value)(_lists_copied(v) for v in value)
    return value


def _mark(cache: list[Any]) -> list[Any]:
    """Where each cache entry is now: its length (attention) or its state (recurrent)."""
    return [entry.offset if entry.is_trimmable() else _lists_copied(entry.state) for entry in cache]


def _rewind(cache: list[Any], mark: list[Any]) -> None:
    for entry, where in zip(cache, mark, strict=True):
        if entry.is_trimmable():
            entry.trim(entry.offset - where)
        else:
            entry.state = _lists_copied(where)


@dataclass
class Counts:
    """Drafts of a turn: how many were proposed and how many the model kept."""

    drafted: int = 0
    accepted: int = 0
    rounds: int = 0


@dataclass
class Pace:
    """auto's measurements, kept across turns (one per loaded head): the last plain steps' seconds,
    the last rounds since drafting was turned on (tokens written, seconds from the round's start to
    whatever follows it), the acceptance, the pause."""

    plain: deque[float] = field(default_factory=lambda: deque(maxlen=PLAIN_WINDOW))
    recent: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=WINDOW_ROUNDS))
    acceptance: float = 0.75
    k: int = 2  # drafts per round, 1..MAX_DRAFTS, from the acceptance
    pause_left: int = 0  # plain tokens to decode before drafting again
    pause: int = PAUSE_TOKENS  # the next pause's length
    doubted: bool = False  # the rounds look slow: plain decoding is being timed again to judge them

    @staticmethod
    def ema(old: float, new: float, weight: float = 0.3) -> float:
        return old + weight * (new - old)

    @property
    def plain_s(self) -> float | None:
        """Seconds per plain token: the median of the last plain steps timed."""
        return statistics.median(self.plain) if self.plain else None

    def speed_up(self) -> float | None:
        """Rounds' tokens per second over plain decoding's, as measured (None: not measured yet)."""
        if self.plain_s is None or not self.recent:
            return None
        tokens = sum(written for written, _ in self.recent)
        return tokens * self.plain_s / sum(seconds for _, seconds in self.recent)


# (tokens before this position, logits (1, V)) -> (the pick, lazy (1,), its measure or None)
SampleAt = Callable[[mx.array, mx.array], tuple[mx.array, Any]]
# logits (n, V) -> the picks (n,), each row sampled on its own: for a turn whose picks depend on
# nothing but the logits (no logits processor, no measures), all of a round's at once.
SampleRows = Callable[[mx.array], mx.array]


@dataclass
class Round:
    """One verified round: the tokens it writes (``b`` and the kept drafts), their measures, the
    model's next pick and the logits after each written token."""

    tokens: list[int]
    measures: list[Any]
    next_token: mx.array
    next_measure: Any
    logits: mx.array  # (1, k+1, V)
    hidden: mx.array  # (1, k+1, H)
    mark: list[Any]
    fed: mx.array  # the verify input (k+1,)
    index: int  # where the round started
    kept: int = field(default=0)  # tokens of ``fed`` the cache holds now
    inputs: list[Any] | None = None  # a text-only round's recorded layer inputs


class Speculator:
    """A turn's speculative decoding: plain steps that keep the hidden state, and rounds."""

    def __init__(
        self,
        model: Any,
        is_vision: bool,
        drafter: Any,
        mode: MtpMode,
        rope_delta: int,
        cache: list[Any],
        pace: Pace,
    ):
        self.model = model
        self.forward = TargetForward(model, is_vision)
        self.drafter = drafter
        self.mode = mode
        self.rope_delta = rope_delta
        self.cache = cache
        self.counts = Counts()
        self.hidden: mx.array | None = None  # the hidden state that picked the next token
        self._stale = True  # the drafter's cache does not follow the model's
        self._pace = pace
        self._plain_at: float | None = None
        self._steady = 0  # single-token plain steps in a row
        self._open_round: tuple[float, int] | None = None  # (its start, tokens it wrote)

    # ------------------------------------------------------------------ plain steps

    def step(self, token: mx.array, index: int) -> mx.array:
        """A plain decode step (as LoadedModel.step), keeping the hidden state for the next round."""
        now = time.perf_counter()
        self._close_round(now)
        if self.mode is MtpMode.AUTO and self._pace.pause_left > 1:  # no round can follow it
            logits = self.forward.logits(token, index, self.rope_delta, self.cache)
            self.hidden = None
        else:
            hidden, logits = self.forward(token, index, self.rope_delta, self.cache)
            self.hidden = hidden[:, -1:, :]
        self._stale = True
        self._time_step(now, token.size)
        return logits[:, -1, :]

    def _time_step(self, now: float, fed: int) -> None:
        """Time a plain step called at ``now`` feeding ``fed`` tokens (only in steady decoding)."""
        pace = self._pace
        if fed == 1 and self._plain_at is not None and self._steady >= STEADY_STEPS:
            pace.plain.append(now - self._plain_at)
        self._steady = self._steady + 1 if fed == 1 else 0
        pace.pause_left = max(0, pace.pause_left - 1)
        self._plain_at = now

    def wants_round(self, generated: int, left: int, safe: bool) -> bool:
        """Whether the next token should come from a round (else a plain step)."""
        if self.mode is MtpMode.OFF or not safe or left < 2 or self.hidden is None:
            return False
        if self.mode is MtpMode.ON:
            return True
        self._close_round(time.perf_counter())  # judge the last round before drafting again
        pace = self._pace
        if len(pace.plain) < PLAIN_WARMUP:  # plain decoding not timed (again) yet
            return False
        if pace.doubted:  # plain decoding timed afresh: judge the rounds against it
            pace.doubted = False
            speed_up = pace.speed_up()
            if speed_up is not None and speed_up < PAYS:
                self._pause()
        return pace.pause_left == 0

    # ------------------------------------------------------------------ rounds

    def run_round(
        self,
        b: mx.array,
        b_measure: Any,
        index: int,
        reply: mx.array,
        left: int,
        sample_at: SampleAt,
        draft_pick: Callable[[mx.array], Callable[[mx.array], mx.array]] | None,
        sample_rows: SampleRows | None = None,
    ) -> Round:
        """Draft ``k`` tokens after ``b`` (at ``index``), verify them, and keep the agreeing prefix
        in the cache. ``reply``: this turn's tokens before ``b``; ``left``: tokens the turn may
        still write (``b`` included)."""
        started = time.perf_counter()
        self._close_round(started)
        drafter = self.drafter
        forward = self.forward
        k = max(1, min(self._pace.k, left - 1))
        b = b.reshape(-1).astype(mx.int32)
        prefix = mx.concatenate([reply, b])
        if self._stale:
            drafter.reset(self.model)
            self._stale = False
        drafter.set_shared_kv({}, index, position=max(index - 1, 0), kv_valid_len=index)
        picker = draft_pick(prefix) if draft_pick is not None else None
        greedy = picker is None
        drafts = drafter.draft_block(b, self.hidden, None, k + 1, picker, mx.int32, greedy=greedy)
        drafts = drafts.reshape(-1)[:k].astype(mx.int32)
        mark = _mark(self.cache)
        fed = mx.concatenate([b, drafts])
        transaction = None
        try:
            inputs = None
            if forward.transactional:
                hidden, logits, transaction = forward.verify(
                    fed, index, self.rope_delta, self.cache
                )
            else:
                hidden, logits, inputs = forward.record(fed, self.cache)
            # The model's pick after each position, sampled as if every draft before it were kept
            # (a pick after a refused draft is never used), all read in one evaluation.
            if sample_rows is not None:
                picked = sample_rows(logits[0]).reshape(-1).astype(mx.int32)
                pick_measures = [None] * (k + 1)
            else:
                picks, pick_measures = [], []
                for i in range(k + 1):
                    pick, measure = sample_at(
                        mx.concatenate([prefix, drafts[:i]]) if i else prefix, logits[:, i, :]
                    )
                    picks.append(pick.reshape(-1).astype(mx.int32))
                    pick_measures.append(measure)
                picked = mx.concatenate(picks)
            mx.eval(fed, picked)
            # token ids, one row each: tolist() of a 1-D int array is list[int]
            fed_ids, pick_ids = cast(list[int], fed.tolist()), cast(list[int], picked.tolist())
            accepted = 0
            while accepted < k and pick_ids[accepted] == fed_ids[accepted + 1]:
                accepted += 1
            if transaction is not None:
                forward.commit(self.cache, transaction, accepted + 1, k + 1)
                transaction = None
        except BaseException:
            if transaction is not None:
                forward.abort(transaction)
            raise
        tokens = fed_ids[: accepted + 1]
        measures = [b_measure, *pick_measures[:accepted]]
        pick, measure = picked[accepted : accepted + 1], pick_measures[accepted]
        rnd = Round(
            tokens, measures, pick, measure, logits, hidden, mark, fed, index, k + 1, inputs
        )
        if forward.transactional:
            rnd.kept = accepted + 1
        else:
            self._keep(rnd, accepted + 1)
        self.hidden = hidden[:, accepted : accepted + 1, :]
        next_picker = (
            draft_pick(mx.concatenate([prefix, drafts[:accepted], pick]))
            if draft_pick is not None
            else None
        )
        drafter.accept_verified_tokens(
            hidden,
            drafts[None],
            accepted,
            [*fed_ids[1 : accepted + 1], pick_ids[accepted]],
            next_picker,
            mx.int32,
            greedy=greedy,
        )
        self.counts.drafted += k
        self.counts.accepted += accepted
        self.counts.rounds += 1
        self._adapt(k, accepted)
        self._open_round = (started, len(tokens))
        self._plain_at = None
        self._steady = 0
        return rnd

    def settle(self, rnd: Round, written: int) -> tuple[int, mx.array]:
        """Keep only the first ``written`` tokens of ``rnd`` in the cache (a turn that stops inside a
        round); returns (the index after them, the logits for the next token)."""
        self._keep(rnd, written)
        if written < len(rnd.tokens):
            self._stale = True
            self.hidden = rnd.hidden[:, written - 1 : written, :]
        return rnd.index + written, rnd.logits[:, written - 1, :]

    def _keep(self, rnd: Round, n: int) -> None:
        """Leave the cache holding the round's first ``n`` tokens (evaluated with what follows)."""
        if n == rnd.kept:
            return
        forward = self.forward
        if rnd.inputs is not None:  # text-only: trim, and re-run the recurrence alone
            forward.keep_recorded(self.cache, rnd.mark, rnd.inputs, n)
        else:  # rewind, and re-run token by token, as plain decoding runs the recurrence
            _rewind(self.cache, rnd.mark)
            _, _, transaction = forward.verify(rnd.fed[:n], rnd.index, self.rope_delta, self.cache)
            forward.commit(self.cache, transaction, n, n)
        rnd.kept = n

    # ------------------------------------------------------------------ auto

    def _adapt(self, k: int, accepted: int) -> None:
        """k from the acceptance: more drafts while nearly all are kept, fewer when most are not."""
        pace = self._pace
        pace.acceptance = Pace.ema(pace.acceptance, accepted / k)
        if pace.acceptance > 0.8:
            pace.k = min(MAX_DRAFTS, pace.k + 1)
        elif pace.acceptance < 0.5:
            pace.k = max(1, pace.k - 1)

    def _close_round(self, now: float) -> None:
        """Time the last round (up to ``now``) and, in auto, judge whether drafting pays (a head
        that does not pay costs one round per pause)."""
        if self._open_round is None:
            return
        started, written = self._open_round
        self._open_round = None
        pace = self._pace
        pace.recent.append((written, now - started))
        speed_up = pace.speed_up()
        if self.mode is not MtpMode.AUTO or speed_up is None:
            return
        rounds = len(pace.recent)
        if rounds < ROUND_WARMUP and not (rounds == 1 and written == 1):
            return
        if speed_up >= PAYS:
            pace.pause = PAUSE_TOKENS
        elif rounds == 1:  # one round whose drafts were all refused cannot have paid
            self._pause()
        else:  # time plain decoding again before judging (wants_round does)
            pace.doubted = True
            pace.plain.clear()

    def _pause(self) -> None:
        """Decode plainly for a while, then probe with one round (k as the acceptance left it)."""
        pace = self._pace
        pace.pause_left, pace.pause = pace.pause, min(MAX_PAUSE_TOKENS, pace.pause * 2)
        pace.recent.clear()


def speculation_safe(processors: Sequence[Any]) -> bool:
    """Whether every logits processor depends only on the tokens it is given (so it may be asked
    about drafts the model then refuses): those that say so with ``speculation_safe``."""
    return all(getattr(p, "speculation_safe", False) for p in processors)


def draft_picker(processors: Sequence[Any]) -> Callable[[mx.array], Callable[[mx.array], mx.array]]:
    """For drafts after ``tokens``: a picker that applies ``processors`` as the model's picks get them
    (so drafts match what the model will pick) and takes the most likely token."""

    def for_prefix(tokens: mx.array) -> Callable[[mx.array], mx.array]:
        picked: list[mx.array] = []

        def pick(logits: mx.array) -> mx.array:
            scored = logits.reshape(1, -1)
            scored = scored - mx.logsumexp(scored, axis=-1, keepdims=True)
            before = mx.concatenate([tokens, *picked]) if picked else tokens
            for processor in processors:
                scored = processor(before, scored)
            token = mx.argmax(scored, axis=-1).astype(mx.int32)
            picked.append(token)
            return token.reshape(1, 1)

        return pick

    return for_prefix


class Speculation:
    """A loaded drafter and the mode to use it in: starts a :class:`Speculator` for each turn."""

    def __init__(self, model: Any, is_vision: bool, drafter: Any, mode: MtpMode, head: MtpHead):
        self.model = model
        self.is_vision = is_vision
        self.drafter = drafter
        self.mode = mode
        self.head = head
        self.pace = Pace()  # what auto has measured, over all turns
        self.last: Speculator | None = None  # the latest turn's (its counts, for benchmarks)

    def start(self, inputs: Any, cache: list[Any]) -> Speculator:
        self.last = Speculator(
            self.model, self.is_vision, self.drafter, self.mode, inputs.rope_delta, cache, self.pace
        )
        return self.last
